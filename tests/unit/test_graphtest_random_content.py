"""graphtest's randomContent gives Go's bytes (reference: go1.19 math/rand).

The digests below were produced by running Docker's randomContent (copied
from moby graphtest/testutil.go) with Go 1.19; a layer the Python suite
writes is then byte-identical to one Docker's suite writes.
"""

import hashlib

import pytest

from tests.integration.graphtest import random_content
from tests.integration.gorand import GoSource

GO_1_19 = [
    (64, 3, "7ccd065773d99f52f205f999bac8100e29414962a2aec501909ff5536c39348b"),
    (128, 4, "fdd3984953e505a4e2d9f1975c05c811c8fc71a948e2093c731065f1a7cb7654"),
    (16384, 5, "31429ba5e9d5139a51a6448d65112d054781a08fc3846615ad89093cf57f8a0b"),
    (64, 0, "565966bd0e0cedaa92f154c2d17abfa4c5f98a668cef2e20b0855558e0583db9"),
    (64, -7, "f4d9365a89ad4dd51e42f727ebecab34879b2445405d890d192fa4c06228b825"),
    (5000, 123456789012, "0a513ec484ede222a756ccdeb7359b0c70ed5b2a0486d0e34b3d74b5eb206809"),
    (64, 2147483647, "565966bd0e0cedaa92f154c2d17abfa4c5f98a668cef2e20b0855558e0583db9"),
    (64, 2147483646, "31590d9e61f893504882bf57f65716e14ae4cf8db4db6d1793299b7ea97d5824"),
]


@pytest.mark.parametrize("size,seed,digest", GO_1_19)
def test_random_content_matches_go(size, seed, digest):
    data = random_content(size, seed)
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == digest


def test_first_int63_of_seed_1_is_gos_famous_value():
    # rand.NewSource(1).Int63(), the value every Go playground printed
    assert GoSource(1).int63() == 5577006791947779410
