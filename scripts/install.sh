#!/usr/bin/env bash
# One-command set-up on a fresh Debian/Ubuntu machine: system packages, then a virtual environment
# .venv/ holding streamcli with its test, training and plotting extras (editable, so the shipped
# models/ folder is found in place). Tests then run with `.venv/bin/python -m pytest -q`.
set -euo pipefail
cd "$(dirname "$0")/.."

# PortAudio for sounddevice; libsndfile for soundfile; PulseAudio + ALSA's pulse plugin for the live
# end-to-end test (a null sink stands in for a microphone); espeak-ng/flite/festival voices/sox for
# synthetic speech; chromium for the captions-page browser test; fortunes + wordnet-base (sentences), wamerican (word list) for its text (text_corpus.py).
APT_PACKAGES="chromium libportaudio2 libsndfile1 pulseaudio pulseaudio-utils libasound2-plugins alsa-utils espeak-ng flite sox festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fortunes wordnet-base wamerican"

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

BASE_PY="${PYTHON:-python3}"
VENV="${STREAMCLI_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$BASE_PY" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# The CPU build of torch keeps the training extra small; a CUDA build can be installed instead by hand.
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "torch==2.13.0"
# The training and development tools are a distribution of their own (tools/), installed first so the
# train extra finds it here, without an index.
"$PY" -m pip install -q --no-deps -e tools
"$PY" -m pip install -q -e '.[test,train,plot,ray]'
# An editable install leaves the package uncompiled; compile it once, as a regular `pip install .` does,
# so every command does not start by compiling its modules.
"$PY" -m compileall -q streamcli tools/streamcli_tools
echo "streamcli installed in $VENV: $("$PY" -c 'import streamcli; print(streamcli.__version__)')"
