"""The benchmark generator's shapes (benchmarks/generate.py): the first sets keep their bytes,
the `shaped` set differs from `medium` where its Shape says."""

import hashlib
import json
from pathlib import Path

from benchmarks import generate

from oracle import fields_of

COURSE = "MITx-7.001x-2014_T1"
PINNED_JOBS = {
    "smoke": "5d6bffca772d380ce9119daeb790155e938c35090fa086f9fd2f0f560869db6f",
    "medium": "0630d14e3fae75581ea4d0e11d4fec8063f6df54cf9e65aa23734540c6930322",
    "small-files": "eaef0f798f247a1fa5bad6f255cabb3450526a9977a00c3a605540b421d08fcf",
    "many-files": "64fa2e47d717a7b986cee38164a25eb7476acf06c8ce665df9e16cd84a403150",
}
"""Digests of each first set's files (table, stage, course, size, seed, variant, quoted, time),
as the generator wrote them before it had shapes: results and tests depend on these bytes."""
PINNED_EXPORTS = {
    ("auth_user", True): "646a71b2226bffc1f864562f5dea8bdd18c43a4975c5f6c17ad2d5cc7ca4011f",
    ("auth_user", False): "7ce7f16354c99c522efa489adc518c55c3eb50f85b915b4588279d83dff68456",
    ("courseware_studentmodule", True): (
        "807ac15999d6bd550fe5685ddc5543cf8b4baee0b52fc3f7093fc3209962761f"
    ),
    ("courseware_studentmodule", False): (
        "f97e4f7f6419269c1f6dd04611c15d7539db5970e38416f7807a08e26af3251e"
    ),
}


def test_the_first_sets_keep_their_files():
    for name, digest in PINNED_JOBS.items():
        jobs = generate.jobs(generate.SETS[name], Path("/x"), generate.SEED)
        files = json.dumps([list(job[1:9]) for job in jobs]).encode()
        assert hashlib.sha256(files).hexdigest() == digest, name


def test_the_default_shape_keeps_the_bytes_of_an_export():
    for (table, quoted), digest in PINNED_EXPORTS.items():
        content, _ = generate.export_bytes(table, COURSE, 30_000, 7, 6, quoted)
        assert hashlib.sha256(content).hexdigest() == digest, (table, quoted)


def test_the_shaped_set_differs_where_its_shape_says():
    shaped, medium = generate.SETS["shaped"], generate.SETS["medium"]
    assert sum(shaped.courses.values()) == 159 < sum(medium.courses.values())
    assert sum(shaped.prod_bytes.values()) == 400 * generate.MB
    quoted = [job[7] for job in generate.jobs(shaped, Path("/x"), generate.SEED)]
    assert all(quoted)  # every export quoted; medium has older unquoted ones
    assert not all(job[7] for job in generate.jobs(medium, Path("/x"), generate.SEED))

    def export(shape):
        table = "courseware_studentmodule"
        content, rows = generate.export_bytes(table, COURSE, 200_000, 7, 1, True, shape)
        return fields_of(content.decode()), rows

    plain, plain_rows = export(medium.shape)
    wide, wide_rows = export(shaped.shape)
    assert len(wide[0]) == len(plain[0]) + 8  # 8 more columns
    assert wide[0][-8:] == [f"extra_{n:02d}" for n in range(8)]
    assert all(len(row) == len(wide[0]) for row in wide)
    state = plain[0].index("state")
    problems = [row[state] for row in plain[1:] if row[1] == "problem"]
    long_problems = [row[state] for row in wide[1:] if row[1] == "problem"]
    average = sum(map(len, long_problems)) / len(long_problems)
    assert average > 1.5 * sum(map(len, problems)) / len(problems)  # longer fields (~1.9x)
    backslashes = sum(value.count("\\") for value in long_problems) / len(long_problems)
    # Denser escapes (~4x the backslashes).
    assert backslashes > 3 * sum(value.count("\\") for value in problems) / len(problems)
    assert wide_rows < plain_rows  # the same bytes hold fewer, longer rows
