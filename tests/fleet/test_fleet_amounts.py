import pytest

from nvreload.errors import BadInputError
from nvreload.fleet.amounts import Amount, batch_sizes, parse_serial


def test_a_percentage_rounds_down_but_is_at_least_one_node_as_ansible_counts_serial():
    assert Amount.parse("10%", "x").of(4) == 1  # 0.4 of a node is one node
    assert Amount.parse("25%", "x").of(10) == 2  # 2.5 rounds down
    assert Amount.parse("0%", "x").of(10) == 0


def test_the_last_batch_size_repeats_until_every_host_is_in_a_batch():
    assert batch_sizes(20, parse_serial('[1, 1, "10%", "25%"]')) == [1, 1, 2, 5, 5, 5, 1]
    assert batch_sizes(4, parse_serial('[1, 1, "10%", "25%"]')) == [1, 1, 1, 1]


def test_a_zero_batch_takes_every_host_left():
    assert batch_sizes(7, parse_serial("[1, 0]")) == [1, 6]


def test_no_hosts_make_no_batches():
    assert batch_sizes(0, parse_serial("[1]")) == []


@pytest.mark.parametrize("text", ["-1", "ten", "150%", "", "1.5", "true"])
def test_an_amount_that_is_not_a_count_or_a_percentage_is_refused_naming_the_variable(text):
    with pytest.raises(BadInputError, match="nvreload_max_unavailable"):
        Amount.parse(text, "nvreload_max_unavailable")


def test_an_empty_batch_list_is_refused():
    with pytest.raises(BadInputError, match="empty list"):
        parse_serial("[]")
