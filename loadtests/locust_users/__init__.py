"""Locust users for sse_server, one module per way the server is used.

loadtests/locustfile.py imports them; run_load.py picks a scenario's users by
class name. See loadtests/README.md, "Load tests (Locust)".
"""
