"""OpenAI's completions API, driven by the real `openai` client against a real server on 127.0.0.1:
plain, n > 1, stop, streaming, logprobs, echo, the models, bad requests raising the client's usual
exceptions, and an API key; the same seed gives the text `charrnn sample` gives."""

import json

import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from conftest import Served

openai = pytest.importorskip("openai", reason="the test extra is not installed: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def served(trained_run):
    server = Served(trained_run, "--model-name", "bard", "--max-length", "500", "--max-samples", "8")
    yield server
    code, log = server.stop()
    assert code == 143 and "Traceback" not in log, log


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)


def sampled(run, *args) -> list[dict]:
    result = CliRunner().invoke(cli, ["sample", str(run), "--json", *map(str, args)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["samples"]


def test_a_completion_is_the_text_charrnn_sample_gives(client, trained_run):
    answer = client.completions.create(model="bard", prompt="ROMEO:", max_tokens=60, temperature=0.8, seed=11)
    expected = sampled(trained_run, "--prime", "ROMEO:", "--length", 60, "--temperature", 0.8, "--seed", 11)[0]
    assert answer.object == "text_completion" and answer.model == "bard" and answer.id.startswith("cmpl-")
    assert answer.choices[0].text == expected["completion"] and answer.choices[0].finish_reason == "length"
    assert answer.usage.prompt_tokens == 6 and answer.usage.completion_tokens == 60
    assert answer.usage.total_tokens == 66


def test_n_choices_for_each_prompt_in_order(client, trained_run):
    answer = client.completions.create(model="bard", prompt=["ROMEO:", "JULIET:"], n=2, max_tokens=30, seed=5,
                                       extra_body={"top_k": 5})  # the extension other servers accept
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    for prompt, choices in (("ROMEO:", answer.choices[:2]), ("JULIET:", answer.choices[2:])):
        expected = sampled(trained_run, "--prime", prompt, "--length", 30, "--num-samples", 2, "--seed", 5,
                           "--top-k", 5)
        assert [c.text for c in choices] == [s["completion"] for s in expected]


def test_stop_strings_are_cut_from_the_text(client, trained_run):
    answer = client.completions.create(model="bard", prompt="ROMEO:", max_tokens=200, seed=3, stop=["\n\n", "!"])
    expected = sampled(trained_run, "--prime", "ROMEO:", "--length", 200, "--seed", 3, "--stop", "\n\n", "--stop", "!")
    assert answer.choices[0].text == expected[0]["completion"] and "!" not in answer.choices[0].text
    assert answer.choices[0].finish_reason == expected[0]["finish_reason"]


def test_streaming_sends_chunks_then_the_finish_and_the_usage(client, trained_run):
    chunks = list(client.completions.create(model="bard", prompt="ROMEO:", max_tokens=40, seed=9, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == sampled(trained_run, "--prime", "ROMEO:", "--length", 40, "--seed", 9)[0]["completion"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"] and len(chunks) > 5
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 40


def test_logprobs_and_echo(client, trained_run):
    answer = client.completions.create(model="bard", prompt="ROMEO:", max_tokens=10, seed=2, logprobs=3, echo=True)
    choice = answer.choices[0]
    assert choice.text.startswith("ROMEO:")
    lp = choice.logprobs
    assert lp.tokens[:6] == list("ROMEO:") and "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[0] is None and all(v <= 0 for v in lp.token_logprobs[1:])
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert all(len(top) == 3 for top in lp.top_logprobs[1:])
    for token, value, top in zip(lp.tokens[6:], lp.token_logprobs[6:], lp.top_logprobs[6:]):
        assert value <= max(top.values()) + 1e-12
    plain = client.completions.create(model="bard", prompt="ROMEO:", max_tokens=10, seed=2, logprobs=0)
    assert plain.choices[0].logprobs.text_offset[0] == 6 and plain.choices[0].logprobs.top_logprobs[0] == {}
    mean = sum(plain.choices[0].logprobs.token_logprobs) / 10
    expected = sampled(trained_run, "--prime", "ROMEO:", "--length", 10, "--seed", 2)[0]
    assert mean == pytest.approx(expected["mean_logprob"], rel=1e-9)


def test_best_of_keeps_the_likeliest(client):
    answer = client.completions.create(model="bard", prompt="ROMEO:", max_tokens=20, seed=4, n=2, best_of=5)
    assert len(answer.choices) == 2


def test_the_models(client, served):
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["bard"] and listed.data[0].owned_by == "charrnn"
    assert client.models.retrieve("bard").id == "bard"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


@pytest.mark.parametrize("fields, param", [
    ({"suffix": "the end"}, "suffix"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": 1}, "frequency_penalty"),
    ({"logit_bias": {"3": 5}}, "logit_bias"),
    ({"logprobs": 9}, "logprobs"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 501}, "max_tokens"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": 3, "best_of": 2}, "best_of"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "~~~"}, "prompt"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": 3}, "prompt"),
    ({"seed": "x"}, "seed"),
    ({"echo": "yes"}, "echo"),
])
def test_bad_requests_raise_the_clients_bad_request_error_naming_the_field(client, fields, param):
    body = {"model": "bard", "prompt": "ROMEO:", **fields}
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(**body)
    assert raised.value.status_code == 400 and raised.value.body["param"] == param
    assert raised.value.body["type"] == "invalid_request_error" and raised.value.body["message"]


def test_unknown_models_fields_and_stream_with_best_of_are_refused(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="ROMEO:")
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="bard", prompt="ROMEO:", extra_body={"mystery": 1})
    with pytest.raises(openai.BadRequestError):
        list(client.completions.create(model="bard", prompt="ROMEO:", stream=True, n=1, best_of=3))


def test_an_api_key_keeps_strangers_out(trained_run):
    served = Served(trained_run, "--api-key", "s3cret")
    try:
        keyed = openai.OpenAI(base_url=served.url + "/v1", api_key="s3cret", max_retries=0)
        assert keyed.completions.create(model="run", prompt="R", max_tokens=3).choices[0].text
        for wrong in ("wrong", "s3cre", "s3cret!"):
            stranger = openai.OpenAI(base_url=served.url + "/v1", api_key=wrong, max_retries=0)
            with pytest.raises(openai.AuthenticationError) as raised:
                stranger.completions.create(model="run", prompt="R", max_tokens=3)
            assert raised.value.body["code"] == "invalid_api_key"
        import httpx

        assert httpx.get(served.url + "/healthz").json()["auth"] is True
        assert httpx.get(served.url + "/").status_code == 200  # the page itself; it asks for the key
        answer = httpx.post(served.url + "/v1/generate", json={"length": 3})
        assert answer.status_code == 401 and answer.json()["error"].startswith("a valid API key")
        answer = httpx.post(served.url + "/v1/generate", json={"length": 3}, headers={"Authorization": "Bearer s3cret"})
        assert answer.status_code == 200
    finally:
        served.stop()


def test_binding_beyond_loopback_without_a_key_warns(trained_run):
    served = Served(trained_run, "--host", "0.0.0.0")
    try:
        assert "reachable from other machines and no --api-key is set" in served.warning
    finally:
        served.stop()
