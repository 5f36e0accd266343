"""A tiny upstream for the embedded demo: `manage.py rungateway` starts it on 127.0.0.1."""
