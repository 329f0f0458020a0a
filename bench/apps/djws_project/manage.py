#!/usr/bin/env python
"""Management entry of the benchmark's django-ws project (``websockets_server``)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djws_bench.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
