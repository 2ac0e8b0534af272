"""Job folders: names that no database can store are refused before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.errors import BadInput, Forbidden
from service.paths import is_utf8, printable, resolve_job_folder


def test_a_folder_whose_name_is_not_utf8_is_refused_with_a_readable_name(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / os.fsdecode(b"caf\xe9")).mkdir()  # as a CLI argument arrives: a lone surrogate

    with pytest.raises(BadInput) as caught:
        resolve_job_folder(os.fsdecode(b"caf\xe9"), [root])

    assert "caf\\xe9" in str(caught.value) and "UTF-8" in str(caught.value)


def test_printable_escapes_only_the_undecodable_bytes() -> None:
    name = os.fsdecode(b"Na\xefve \xe9 \xc3\xa9.jpg")  # Latin-1 bytes, then a real UTF-8 é
    assert not is_utf8(name)
    assert printable(name) == "Na\\xefve \\xe9 é.jpg"
    assert is_utf8(printable(name)) and is_utf8("Ñaja 蛇.jpg")


def test_a_home_folder_of_no_such_user_is_refused_like_a_real_one(tmp_path: Path) -> None:
    # Found by schemathesis: Path.expanduser raised RuntimeError, and the API answered 500.
    # The answer is the same as for an existing user's home, so no OS user name leaks.
    answers = []
    for folder in ("~no-such-user-here/photos", "~root/photos"):
        with pytest.raises(Forbidden, match="outside the allowed roots") as refused:
            resolve_job_folder(folder, [tmp_path.resolve()])
        answers.append(refused.value.details)
    assert answers[0] == answers[1]
