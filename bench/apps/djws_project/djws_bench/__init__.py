"""The benchmark's chat workload served by django-ws."""
