"""The benchmark's chat workload served by Django Channels under uvicorn."""
