"""`acgan status`: the table and the JSON."""

import json

from tests.acgan_cli.test_main import TINY_ARGS, run


def test_status_table_and_json(capsys, digits_store):
    store = str(digits_store.root)
    assert run(capsys, "train-split", "--store", store, "--split", 0, "--steps", 5, *TINY_ARGS)[0] == 0
    code, out, _ = run(capsys, "status", "--store", store)
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split() == ["0", "0,1,2,3,4", "5", "/", "5", "complete"]
    assert lines[2].split() == ["1", "5,6,7,8,9", "-", "/", "?", "not", "started"]
    assert lines[-1] == "1 of 2 splits complete"
    code, out, _ = run(capsys, "status", "--store", store, "--json")
    assert [s["state"] for s in json.loads(out)["splits"]] == ["complete", "not started"]
