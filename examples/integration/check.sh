#!/bin/sh
# The integration check: the site and the API answer on their addresses, side by side.
set -eu
fetch() {
    if command -v curl >/dev/null 2>&1; then curl -fsS "$1"; else busybox wget -qO- "$1"; fi
}
api=$(fetch "http://$API_ADDR/")
site=$(fetch "http://$SITE_ADDR/")
echo "api: $api"
echo "site: $(echo "$site" | grep '<h1>')"
case "$api" in *'"status":"ok"'*) ;; *) echo "the API is not ok: $api" >&2; exit 1 ;; esac
case "$site" in *'static site built by cbuild'*) ;; *) echo "the site does not answer its page" >&2; exit 1 ;; esac
echo "site and api both answer"
