from dataclasses import dataclass
from typing import Literal, Optional

import pytest

from avbench.config import apply_overrides, parse_pairs
from avbench.errors import UserError
from avbench.runner import parse_seeds, split_overrides


@dataclass
class C:
    n: int = 1
    x: float = 0.5
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    dims: tuple[int, ...] = (1, 2)
    maybe: Optional[int] = None


def test_typed_overrides():
    c = apply_overrides(C(), parse_pairs(["n=3", "x=1e-3", "flag=true", "mode=b", "dims=4,5,6", "maybe=none"]))
    assert c == C(n=3, x=1e-3, flag=True, mode="b", dims=(4, 5, 6), maybe=None)
    assert apply_overrides(C(), {"maybe": "7"}).maybe == 7


@pytest.mark.parametrize("pair, message", [
    ("n=2.5", "expected int, got '2.5'"), ("flag=maybe", "expected a boolean"), ("mode=c", "not one of a, b"),
    ("nn=1", "did you mean 'n'"), ("x=fast", "expected float"),
])
def test_override_errors(pair, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(C(), parse_pairs([pair]))
    with pytest.raises(UserError, match="key=value"):
        parse_pairs(["novalue"])


def test_routing_of_set_keys():
    s, r, d = split_overrides({"embed_dim": "8", "lr": "1", "data.snr": "2", "train.epochs": "3"},
                              {"embed_dim"}, {"lr", "epochs"}, {"snr"})
    assert (s, r, d) == ({"embed_dim": "8"}, {"lr": "1", "epochs": "3"}, {"snr": "2"})
    with pytest.raises(UserError, match="ambiguous"):
        split_overrides({"lr": "1"}, {"lr"}, {"lr"}, set())
    with pytest.raises(UserError, match="did you mean 'data.snr'"):
        split_overrides({"snrr": "1"}, set(), set(), {"snr"})


def test_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    for bad in ("a", "0,,x", "1,1", ""):
        with pytest.raises(UserError):
            parse_seeds(bad)
