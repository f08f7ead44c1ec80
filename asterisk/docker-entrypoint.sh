#!/bin/sh
# Container entrypoint: takes the ARI password from $ARI_PASSWORD (shared with the ari-transfer
# container through docker-compose) instead of the development default in ari.conf, then runs
# Asterisk in the foreground as the unprivileged asterisk user.
set -eu
if [ -n "${ARI_PASSWORD:-}" ]; then
    awk '/^[[:space:]]*password[[:space:]]*=/ { print "password = " ENVIRON["ARI_PASSWORD"]; next } { print }' \
        /etc/asterisk/ari.conf >/tmp/ari.conf
    cat /tmp/ari.conf >/etc/asterisk/ari.conf
    rm -f /tmp/ari.conf
fi
exec asterisk -f -U asterisk -G asterisk "$@"
