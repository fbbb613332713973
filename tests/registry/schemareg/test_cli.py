"""`shahrah registry schema ...` as an operator runs it, on a registry made by init."""

from __future__ import annotations

import json
from pathlib import Path

from tests.registry.test_cli import run


def test_schema_commands(tmp_path: Path) -> None:
    d = tmp_path / "reg"
    run("registry", "init", "--data-dir", str(d), "--instance", "PK", "--no-passphrase")
    common = ["--data-dir", str(d)]
    subjects = json.loads(run("registry", "schema", "list", *common).stdout)
    assert "pk.nadra.person" in subjects
    assert "pk.common" in subjects
    shown = json.loads(run("registry", "schema", "show", "pk.nadra.person", *common).stdout)
    assert shown["references"] == [{"name": "pk.common.json", "subject": "pk.common", "version": 1}]
    assert shown["schema"]["title"] == "Person (CNIC identity)"

    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps({"type": "object", "properties": {"cnic": {"type": "string"}}}))
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps({"type": "object", "properties": {"cnic": {"type": "integer"}}}))
    ref_file = tmp_path / "ref.json"
    ref_file.write_text(json.dumps({"$ref": "pk.common.json#/$defs/cnic"}))
    done = json.loads(run("registry", "schema", "register", "pk.test", str(v1), *common).stdout)
    assert done == {"subject": "pk.test", "id": done["id"], "version": 1, "new": True}
    refused = run("registry", "schema", "check", "pk.test", str(v2), *common, ok=False)
    assert refused.exit_code == 1
    verdict = json.loads(refused.stdout)
    assert verdict["changes"][0]["type"] == "TYPE_CHANGED"
    assert verdict["changes"][0]["pointer"] == "#/properties/cnic"
    failed = run("registry", "schema", "register", "pk.test", str(v2), *common, ok=False)
    assert "incompatible" in failed.stderr
    run("registry", "schema", "config", "pk.test", "--level", "none", *common)
    assert json.loads(run("registry", "schema", "config", "pk.test", *common).stdout) == {
        "compatibilityLevel": "NONE",
        "compatibilityPolicy": "STRICT",
    }
    run("registry", "schema", "register", "pk.test", str(v2), *common)
    run("registry", "schema", "register", "pk.cnic", str(ref_file), "--reference",
        "pk.common.json=pk.common:1", *common)  # fmt: skip
    bad_ref = run("registry", "schema", "register", "pk.x", str(ref_file), "--reference", "nope",
                  *common, ok=False)  # fmt: skip
    assert "NAME=SUBJECT:VERSION" in bad_ref.stderr
    assert json.loads(run("registry", "schema", "versions", "pk.test", *common).stdout) == [1, 2]
    assert json.loads(run("registry", "schema", "delete", "pk.test", "1", *common).stdout) == 1
    assert json.loads(run("registry", "schema", "versions", "pk.test", *common).stdout) == [2]
    missing = run("registry", "schema", "show", "pk.nobody", *common, ok=False)
    assert "Subject 'pk.nobody' not found" in missing.stderr
