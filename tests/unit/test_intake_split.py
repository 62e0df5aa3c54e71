"""Splitting an intake body into the raw bytes of each event, checked against orjson."""

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.api.intake import split_body

# JSON values orjson reads back as they were: strings with escapes, quotes, brackets and
# commas (the characters a naive split trips on), numbers, nesting.
TEXT = st.text(alphabet=st.sampled_from('ab"\\/,[]{}:\n\t\x01é€😀\u2028 '), max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
SPACE = st.text(alphabet=" \t\r\n", max_size=3)


@given(items=st.lists(VALUES, min_size=1, max_size=6), gaps=st.lists(SPACE, min_size=20, max_size=20))
@settings(max_examples=300, deadline=None)
def test_an_array_splits_into_its_items_byte_for_byte(items, gaps):
    encoded = [orjson.dumps(item) for item in items]
    # Whitespace anywhere JSON allows it between the array's tokens.
    body = gaps[0].encode() + b"[" + gaps[1].encode()
    for index, raw in enumerate(encoded):
        separator = b"" if index == 0 else gaps[2 + index].encode() + b"," + gaps[10 + index].encode()
        body += separator + raw
    body += gaps[19].encode() + b"]" + gaps[18].encode()
    assert orjson.loads(body) == items  # the body is the JSON array of the items

    split, batch = split_body(body)
    assert batch and split == encoded


@given(item=VALUES.filter(lambda v: not isinstance(v, list)), space=SPACE)
@settings(max_examples=100, deadline=None)
def test_a_body_that_is_not_an_array_is_one_item_as_sent(item, space):
    body = space.encode() + orjson.dumps(item) + space.encode()
    assert split_body(body) == ([body], False)


@pytest.mark.parametrize(
    "body",
    [b"[", b"[1,]", b"[1 2]", b"[,1]", b"[1]]", b"[1] 2", b'["a]', b'["\\"]', b"[{]", b"[NaN]", b"[" * 2000],
)
def test_an_array_that_is_not_json_is_refused(body):
    with pytest.raises(ValueError):
        orjson.loads(body)
    with pytest.raises(ValueError):
        split_body(body)


def test_the_items_of_a_nested_array_are_split_at_the_top_level_only():
    assert split_body(b'[[1, 2], {"a": [3, "],"]}, "[x, y]"]') == (
        [b"[1, 2]", b'{"a": [3, "],"]}', b'"[x, y]"'],
        True,
    )
