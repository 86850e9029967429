#!/usr/bin/env bash
# Fetches the Claude Code plugin (github.com/agentmessaging/claude-plugin) at the commit the
# plugin test was written against, into a cache outside the repository (its code is not
# ours to vendor), and prints the directory to export as AMP_PLUGIN_DIR.
#
# Usage: deploy/plugin/fetch.sh   (AMP_PLUGIN_CACHE overrides ~/.cache/amp-claude-plugin)
set -euo pipefail

REPO="https://github.com/agentmessaging/claude-plugin"
COMMIT="6dd0316a43aa6aeb9938932a6ed4ed77d4d04801"
dir="${AMP_PLUGIN_CACHE:-$HOME/.cache/amp-claude-plugin}/$COMMIT"

if [ ! -f "$dir/scripts/amp-send.sh" ]; then
  rm -rf "$dir.tmp"
  git init -q "$dir.tmp"
  git -C "$dir.tmp" fetch -q --depth 1 "$REPO" "$COMMIT"
  git -C "$dir.tmp" checkout -q FETCH_HEAD
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
fi
echo "$dir"
