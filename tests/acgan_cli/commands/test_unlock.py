"""`acgan unlock`: a lease whose trainer is gone is cleared, a live or damaged one only with --force."""

import json
import subprocess
import sys
import time

from tests.acgan_cli.test_main import assert_one_line_error, run


def _lease_of_a_process_that_ended(store_uri: str, split: int) -> str:
    """A real process of this machine takes the split's lease for ten minutes and exits without releasing it (a
    crash); returns its owner."""
    code = ("import os, sys; from acgan.lease import SplitLease; from acgan.store import open_store; "
            f"lease = SplitLease(open_store(sys.argv[1]), {split}, 600); lease.acquire(); print(lease.owner); "
            "os._exit(0)")
    return subprocess.run([sys.executable, "-c", code, store_uri], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_unlock_clears_a_lease_whose_owner_is_gone_and_refuses_a_live_one(capsys, digits_store):
    from acgan.layout import lease_key
    from acgan.lease import Lease, read_lease

    store = str(digits_store.root)
    code, out, _ = run(capsys, "unlock", "--store", store, "--split", 0)
    assert code == 0 and json.loads(out)["removed"] is None  # nothing to clear
    owner = _lease_of_a_process_that_ended(store, 0)
    assert read_lease(digits_store, 0).owner == owner
    code, out, _ = run(capsys, "unlock", "--store", store, "--split", 0)
    assert code == 0 and json.loads(out)["removed"]["owner"] == owner and read_lease(digits_store, 0) is None

    other = Lease(owner="gpu-node-7/1/0abc", expires=time.time() + 600, acquired=time.time(), seconds=600)
    digits_store.write_bytes(lease_key(1), other.model_dump_json().encode())
    code, _, err = run(capsys, "unlock", "--store", store, "--split", 1)
    assert_one_line_error(code, err, "split 1's lease is live: gpu-node-7/1/0abc renewed it", "--force")
    assert read_lease(digits_store, 1) == other  # left alone
    code, out, _ = run(capsys, "unlock", "--store", store, "--split", 1, "--force")
    assert code == 0 and json.loads(out)["removed"]["owner"] == "gpu-node-7/1/0abc"
    assert not digits_store.exists(lease_key(1))

    digits_store.write_bytes(lease_key(1), b'{"owner": "gpu-node-7/1/0abc", "expires": "soon"}')
    code, _, err = run(capsys, "unlock", "--store", store, "--split", 1)
    assert_one_line_error(code, err, "lease.json: expires:", f"acgan unlock --store {store} --split 1 --force")
    assert digits_store.exists(lease_key(1))
    code, out, _ = run(capsys, "unlock", "--store", store, "--split", 1, "--force")
    assert code == 0 and json.loads(out)["removed"] == {  # what it removed, not `null` (issue 36)
        "damaged": f"{store}/splits/split-00001/lease.json: expires: Input should be a valid number, unable to parse "
                   "string as a number"}
    assert not digits_store.exists(lease_key(1))
    code, _, err = run(capsys, "unlock", "--store", store, "--split", 2)
    assert_one_line_error(code, err, "split 2 is out of range")
