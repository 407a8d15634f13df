#!/bin/sh
# The API: busybox httpd serving public/ (version generated at build time) on 127.0.0.1:$PORT.
exec httpd -f -p "127.0.0.1:${PORT:-8080}" -h /workspace/public
