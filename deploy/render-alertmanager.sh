#!/usr/bin/env bash
# Renders deploy/alertmanager.yml for Alertmanager 0.25/0.26 with the Discord webhook URL read from
# a file, since those releases take the URL only inline (webhook_url_file arrived in 0.27):
#
#   deploy/render-alertmanager.sh URL_FILE OUT     e.g. ... /etc/prometheus/discord_webhook_url \
#                                                          /etc/prometheus/alertmanager.yml
#
# URL_FILE holds one line, https://discord.com/api/webhooks/<id>/<token>. OUT is checked with
# `amtool check-config` (when amtool is installed), then replaced atomically; it keeps the owner and
# group of the file it replaces, else it is yours with mode 0640 (chgrp it to the group Alertmanager
# runs as: prometheus on Debian). Reload Alertmanager afterwards.
set -euo pipefail

if (($# != 2)); then
  sed -n '2,11s/^# \{0,1\}//p' "$0" >&2
  exit 2
fi
url_file=$1 out=$2
template="$(dirname "${BASH_SOURCE[0]}")/alertmanager.yml"
placeholder='https://discord.com/api/webhooks/WEBHOOK_ID/WEBHOOK_TOKEN'

url="$(tr -d ' \t\r\n' <"$url_file")"
if [[ ! "$url" =~ ^https://(discord\.com|discordapp\.com|ptb\.discord\.com|canary\.discord\.com)/api/webhooks/[0-9]+/[A-Za-z0-9_-]+$ ]]; then
  echo "render-alertmanager: $url_file does not hold a Discord webhook URL (https://discord.com/api/webhooks/<id>/<token>)" >&2
  exit 1
fi
grep -qF "'$placeholder'" "$template" || { echo "render-alertmanager: no placeholder in $template" >&2; exit 1; }

tmp="$(mktemp "$(dirname "$out")/.alertmanager.yml.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
chmod 0640 "$tmp"
[[ -e "$out" ]] && chown --reference="$out" "$tmp" 2>/dev/null || true
# awk, not sed: the URL goes in as data (ENVIRON), never as part of a pattern.
URL="$url" PLACEHOLDER="'$placeholder'" awk '{
  i = index($0, ENVIRON["PLACEHOLDER"])
  if (i) $0 = substr($0, 1, i - 1) "\x27" ENVIRON["URL"] "\x27" substr($0, i + length(ENVIRON["PLACEHOLDER"]))
  print
}' "$template" >"$tmp"
if command -v amtool >/dev/null 2>&1; then
  amtool check-config "$tmp" >/dev/null || { amtool check-config "$tmp" >&2 || true; exit 1; }
fi
mv -f "$tmp" "$out"
trap - EXIT
echo "render-alertmanager: wrote $out"
