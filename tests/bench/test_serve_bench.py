"""`python -m charrnn.bench.serve` (make bench-serve): concurrent clients against `charrnn serve`,
spread over processes so that one process's HTTP client does not set the figure. Run here briefly,
so that the documented command keeps working; no timing is asserted."""

from charrnn.bench import serve


def test_clients_are_spread_evenly_over_as_few_processes_as_hold_them():
    assert serve.client_shares(1) == [1]
    assert serve.client_shares(32) == [32]
    assert serve.client_shares(33) == [17, 16]
    assert serve.client_shares(128) == [32, 32, 32, 32]


def test_the_serve_bench_tables_each_row_from_clients_in_several_processes(trained_run, capsys):
    serve.main([str(trained_run), "--clients", "33", "--modes", "batched,alone", "--seconds", "1", "--length", "5"])
    rows = [line.strip("| ").split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| 33 |")]
    assert [row[1] for row in rows] == ["batched", "alone"]
    for clients, mode, requests, tokens, p50, p99, failed in rows:
        assert float(requests) > 0 and float(p50) > 0 and failed == "0", (mode, requests, failed)
