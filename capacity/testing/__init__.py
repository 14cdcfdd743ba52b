"""Test support that scripts and benchmarks use too, like ``numpy.testing``.

``servers`` starts and always stops real servers (apache2, php-fpm, gunicorn, the fork
server); ``capture`` copies a host's /proc and cgroup files into a fixture tree;
``forkserver.py`` is a standard-library program run by path (``python3 .../forkserver.py``).
Nothing here is imported by capplan itself. This file imports nothing (``capplan --help``
stays fast; a test checks every package ``__init__``).
"""
