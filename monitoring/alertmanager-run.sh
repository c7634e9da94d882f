#!/bin/sh
# Renders Alertmanager's configuration with the receiver from ALERT_WEBHOOK_URL, then runs it.
#   alertmanager-run.sh [--render-only] TEMPLATE OUTPUT [alertmanager flags...]
# Used by docker compose (as the entrypoint) and by `energy-monitor up`. Without a URL the
# template's placeholder stays (a local address that answers nothing) and a warning says,
# at every start, that alerts reach nobody.
set -eu
render_only=false
if [ "${1:-}" = --render-only ]; then render_only=true; shift; fi
template=$1 out=$2
shift 2
placeholder=http://127.0.0.1:9099/alerts
url=${ALERT_WEBHOOK_URL:-}
if [ -z "$url" ]; then
  echo "WARNING: ALERT_WEBHOOK_URL is not set: Alertmanager has no receiver and alerts reach nobody" >&2
  url=$placeholder
fi
case $url in
  http://*|https://*) ;;
  *) echo "ALERT_WEBHOOK_URL must start with http:// or https://, got: $url" >&2; exit 2 ;;
esac
case $url in
  *"'"*|*'"'*|*" "*) echo "ALERT_WEBHOOK_URL must not contain quotes or spaces" >&2; exit 2 ;;
esac
watchdog_placeholder=http://127.0.0.1:9099/watchdog
watchdog=${WATCHDOG_WEBHOOK_URL:-$watchdog_placeholder}
case $watchdog in
  http://*|https://*) ;;
  *) echo "WATCHDOG_WEBHOOK_URL must start with http:// or https://, got: $watchdog" >&2; exit 2 ;;
esac
case $watchdog in
  *"'"*|*'"'*|*" "*) echo "WATCHDOG_WEBHOOK_URL must not contain quotes or spaces" >&2; exit 2 ;;
esac
# index/substr rather than sed or gsub: a URL's '&' and '|' are special to those.
awk -v placeholder="$placeholder" -v url="$url" -v wplaceholder="$watchdog_placeholder" -v wurl="$watchdog" '{
  i = index($0, placeholder)
  if (i) $0 = substr($0, 1, i - 1) url substr($0, i + length(placeholder))
  i = index($0, wplaceholder)
  if (i) $0 = substr($0, 1, i - 1) wurl substr($0, i + length(wplaceholder))
  print
}' "$template" > "$out"
if $render_only; then exit 0; fi
bin=$(command -v alertmanager || command -v prometheus-alertmanager)
exec "$bin" --config.file="$out" "$@"
