#!/bin/bash
# The integration check: the site and the API answer on their addresses, side by side, with their
# own pages. It runs on the host's tools; HTTP goes through bash's /dev/tcp, so neither curl nor
# wget has to be installed.
set -euo pipefail

# fetch HOST:PORT PATH: prints the body of an HTTP/1.0 GET, which must answer 200.
fetch() {
    local addr=$1 path=$2 status='' line
    exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}" || { echo "cannot connect to $addr" >&2; return 1; }
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$addr" >&3
    IFS= read -r status <&3 || true
    status=${status%$'\r'}
    case "$status" in
        "HTTP/1."?" 200"*) ;;
        *) echo "GET http://$addr$path answered \`$status\`, not 200" >&2; return 1 ;;
    esac
    # Headers end at the first empty line; the body runs to the end of the connection.
    while IFS= read -r line <&3 && [ -n "${line%$'\r'}" ]; do :; done
    while IFS= read -r line <&3 || [ -n "$line" ]; do printf '%s\n' "$line"; done
    exec 3<&-
}

api=$(fetch "$API_ADDR" /)
site=$(fetch "$SITE_ADDR" /)
echo "api: $api"
while IFS= read -r line; do
    case "$line" in *'<h1>'*) echo "site: $line" ;; esac
done <<<"$site"
case "$api" in *'"status":"ok"'*) ;; *) echo "the API is not ok: $api" >&2; exit 1 ;; esac
case "$site" in *'static site built by cbuild'*) ;; *) echo "the site does not answer its page" >&2; exit 1 ;; esac
echo "site and api both answer"
