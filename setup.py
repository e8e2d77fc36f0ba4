import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "jits.py").read_text(),
                    re.M).group(1)

setup(
    name="jits",
    version=VERSION,
    description="Just-In-Time Scheduler: periodic and deferred tasks run by "
                "web requests, exactly once, with no cron and no worker",
    long_description=(HERE / "README.txt").read_text(),
    long_description_content_type="text/plain",
    author="the jits authors",
    license="MIT",
    py_modules=["jits"],
    python_requires=">=3.9",
    # Test-only dependencies: jits itself needs nothing but the standard
    # library.  mysqlclient builds against the MariaDB client headers.
    extras_require={
        "test": ["django>=4.2", "psycopg[binary]>=3.1", "mysqlclient>=2.1",
                 "gunicorn>=21", "pytest>=7"],
    },
    classifiers=[
        "Framework :: Django",
        "Framework :: Django :: 4.2",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Programming Language :: Python :: 3",
    ],
)
