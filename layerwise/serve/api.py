"""The web API: `POST /api/memory|flops|time|plan|summary` with
`{"model": PRESET_OR_SPEC_TEXT, "workload": {FLAG: VALUE}}` answers exactly what `layerwise COMMAND
MODEL --FLAG VALUE ... --json` prints.

One path for both: the flags are read by the CLI command's own click parser (so the accepted keys,
their types, choices and defaults are the command's, including every workload flag of
commands/_workload.py as it grows), then the same `*_answer` function and the same `*_json`
renderer run. Options that only shape the terminal output or name a file are refused here. No torch
is imported (these are the cost reading's commands); no path from a client is ever opened.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

import click

from layerwise.spec.errors import LayerwiseError

from layerwise.commands._module import MODULE_ONLY

MAX_BODY_BYTES = 1 << 20
# CLI options that have no meaning over HTTP: output format, table depth, files, and the flags of
# FILE.py:factory models (a client's text is never imported: the API takes specs, not code).
# rlhf, placement, ref_quant: `memory --rlhf` answers with another shape (stages, models): CLI only
NOT_IN_API = frozenset({"model", "json", "max_level", "timeline", "html", "rlhf", "placement", "ref_quant",
                        *MODULE_ONLY})


class BadRequest(Exception):
    """An HTTP 400: `field` names what was wrong (a JSON path such as "workload.batch")."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message

    def to_json(self) -> dict:
        return {"error": self.message, "field": self.field}


@dataclass(frozen=True)
class Endpoint:
    command: str  # the CLI command whose flags and JSON this endpoint shares
    answer: Callable  # (spec, **options) -> the value the command renders
    to_json: Callable  # value -> the command's --json


def _endpoints() -> dict[str, Endpoint]:
    from layerwise.commands.flops import flops_answer
    from layerwise.commands.memory import memory_answer
    from layerwise.commands.plan import plan_answer
    from layerwise.commands.summary import summary_answer
    from layerwise.commands.time import time_answer
    from layerwise.report.flops import flops_json
    from layerwise.report.memory import memory_json
    from layerwise.report.plan import plan_json
    from layerwise.report.summary import summary_json
    from layerwise.report.time import any_time_json

    return {"memory": Endpoint("memory", memory_answer, memory_json),
            "flops": Endpoint("flops", flops_answer, lambda r: flops_json(*r)),
            "time": Endpoint("time", time_answer, any_time_json),
            "plan": Endpoint("plan", plan_answer, plan_json),
            "summary": Endpoint("summary", summary_answer, summary_json)}


ENDPOINTS = ("memory", "flops", "time", "plan", "summary")
# API-only switches (booleans): parts of the answer the page draws that the CLI writes elsewhere.
API_SWITCHES = {"memory": ("timeline",)}


def _commands() -> dict[str, click.Command]:
    import typer

    from layerwise.cli import app, _register_commands

    if not app.registered_commands:
        _register_commands()
    group = typer.main.get_command(app)
    return {name: group.commands[name] for name in ENDPOINTS}


class Api:
    """Built once per server: the click commands and the endpoint table."""

    def __init__(self):
        self.commands = _commands()
        self.endpoints = _endpoints()

    def fields(self, endpoint: str) -> dict[str, click.Parameter]:
        """The workload keys an endpoint accepts: its command's options, less NOT_IN_API, each
        named by its flag without the dashes (--grad-accum -> grad_accum, --impl -> impl)."""
        return {api_key(p): p for p in self.commands[endpoint].params
                if isinstance(p, click.Option) and p.name not in NOT_IN_API}

    def handle(self, endpoint: str, body: bytes) -> dict:
        """The JSON answer, or BadRequest naming the field."""
        if endpoint not in self.endpoints:
            raise BadRequest("path", f"unknown endpoint /api/{endpoint}; known: {', '.join(ENDPOINTS)}")
        model, workload = _parse_body(body)
        switches = {k: _switch(k, workload.pop(k)) for k in API_SWITCHES.get(endpoint, ()) if k in workload}
        options = self._options(endpoint, workload)
        spec = _spec(model, options.pop("input", None))
        ep = self.endpoints[endpoint]
        if endpoint in ("memory", "flops"):
            options = _with_workload(options, self._flag_names(endpoint))
        try:
            return ep.to_json(ep.answer(spec, **options, **switches))
        except LayerwiseError as err:
            raise BadRequest(_field_of(str(err), self._flag_names(endpoint)), str(err)) from None

    def _flag_names(self, endpoint: str) -> dict[str, str]:
        """flag (without dashes) -> API key, for naming the field of an error message."""
        return {p.opts[0][2:]: key for key, p in self.fields(endpoint).items()}

    def _options(self, endpoint: str, workload: dict) -> dict:
        """Flag values -> the command's parameters, through its own click parser."""
        fields = self.fields(endpoint)
        args = ["model"]
        for key, value in workload.items():
            if key not in fields:
                known = ", ".join(sorted([*fields, *API_SWITCHES.get(endpoint, ())]))
                raise BadRequest(f"workload.{key}", f"workload.{key}: not a flag of `{endpoint}` (known: {known})")
            args += _argv(key, value, fields[key])
        try:
            ctx = self.commands[endpoint].make_context(endpoint, args, resilient_parsing=False)
        except click.ClickException as err:
            raise BadRequest(_click_field(err), f"workload: {err.format_message()}") from None
        return {k: v for k, v in ctx.params.items() if k not in NOT_IN_API}


def api_key(param: click.Option) -> str:
    return param.opts[0].lstrip("-").replace("-", "_")


def _parse_body(body: bytes) -> tuple[str, dict]:
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest("body", f"body: {len(body):,} bytes is over the {MAX_BODY_BYTES:,}-byte limit")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest("body", f"body: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise BadRequest("body", "body: expected a JSON object {\"model\": ..., \"workload\": {...}}")
    unknown = set(data) - {"model", "workload"}
    if unknown:
        raise BadRequest(sorted(unknown)[0], f"{sorted(unknown)[0]}: unknown key; the body has model and workload")
    model, workload = data.get("model"), data.get("workload", {})
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model", "model: expected a preset name or the text of a spec / config.json")
    if not isinstance(workload, dict):
        raise BadRequest("workload", "workload: expected an object of flags, e.g. {\"batch\": 4}")
    return model, dict(workload)


def _argv(key: str, value, param: click.Option) -> list[str]:
    """One JSON flag value as the command line would carry it."""
    flag = param.opts[0]
    if value is None:
        return []
    if param.is_flag:
        return [flag] if _switch(key, value) else []
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRequest(f"workload.{key}", f"workload.{key}: expected a number or a string, got {json.dumps(value)[:40]}")
    return [flag, str(value)]


def _switch(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"workload.{key}", f"workload.{key}: expected true or false")
    return value


def _with_workload(options: dict, flags: dict[str, str]) -> dict:
    from layerwise.commands._workload import WORKLOAD_OPTIONS, workload_from_options

    values = {k: options.pop(k) for k in list(options) if k in WORKLOAD_OPTIONS}
    try:
        options["workload"] = workload_from_options(**values)
    except LayerwiseError as err:
        raise BadRequest(_field_of(str(err), flags), str(err)) from None
    return options


def _spec(model: str, input_text: str | None):
    from layerwise.commands._model import resolve_text
    from layerwise.commands.summary import parse_shape

    try:
        shape = parse_shape(input_text) if input_text else None
    except LayerwiseError as err:
        raise BadRequest("workload.input", str(err)) from None
    try:
        return resolve_text(model, shape)
    except LayerwiseError as err:
        raise BadRequest("model", str(err) if str(err).startswith("model") else f"model: {err}") from None


def _field_of(message: str, flags: dict[str, str]) -> str:
    """The field an error is about: the first flag it names ('--batch must be ...', 'give
    --samples N') if the endpoint has it (`flags`: flag -> API key); otherwise the model."""
    for match in re.finditer(r"--([a-z][a-z-]*)", message):
        if match.group(1) in flags:
            return f"workload.{flags[match.group(1)]}"
    return "model"


def _click_field(err: click.ClickException) -> str:
    param = getattr(err, "param", None)
    return f"workload.{api_key(param)}" if isinstance(param, click.Option) else "workload"
