"""API fuzzing from the OpenAPI document (FAULTS 16): schemathesis generates requests for
every operation, valid and invalid, with the administrator's token, with an enrolled
device's token and with none. The server must never answer 5xx, and every 4xx must be a
:class:`protocol.api.Problem` (a stable code and a message, never a traceback).

The app runs in-process on SQLite in a module-scoped data directory; schemathesis drives
it through its own ASGI client (and keeps its lifespan running until the process ends).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from protocol.api import EnrolRequest, Problem, b64e, enrol_message
from protocol.keys import SoftwareSigner
from server.app import create_app
from server.settings import Settings

ADMIN = "fuzz-admin-token-0123456789abcdef"
DEVICE = "cam-fuzz"
DEVICE_TOKEN: list[str] = []


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    data: Path = tmp_path_factory.mktemp("fuzz")
    return create_app(Settings(data=data, admin_token=ADMIN))


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app: FastAPI) -> schemathesis.schemas.BaseSchema:
    loaded = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    DEVICE_TOKEN.append(_enrol(fuzz_app))
    return loaded


def _enrol(app: FastAPI) -> str:
    """Enrol DEVICE through the API (schemathesis's client: the app runs in its loop)."""
    from schemathesis.python import asgi

    signer = SoftwareSigner.generate()
    with asgi.get_client(app) as client:
        issued = client.post(
            "/api/v1/admin/enrolment-tokens",
            json={"device": DEVICE},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
        assert issued.status_code == 200, issued.text
        token = issued.json()["token"]
        request = EnrolRequest(
            device=DEVICE,
            token=token,
            public_key=b64e(signer.public_key),
            proof=b64e(signer.sign(enrol_message(token, DEVICE, signer.public_key))),
        )
        enrolled = client.post(
            "/api/v1/enrol",
            data=request.model_dump_json(),
            headers={"content-type": "application/json"},
        )
        assert enrolled.status_code == 200, enrolled.text
        return str(enrolled.json()["api_token"])


def _labels() -> list[str]:
    """Every operation of the OpenAPI document (of an app that is never started)."""
    doc = create_app(Settings(data=Path("unused-never-started"))).openapi()
    return [
        f"{method.upper()} {path}"
        for path, item in sorted(doc["paths"].items())
        for method in sorted(item)
    ]


FUZZ = settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
AUTH = {
    "admin": {"authorization": f"Bearer {ADMIN}"},
    "anonymous": {},
    "stranger": {"authorization": "Bearer not-a-token-anyone-issued"},
    "device": {},
}


def _check(response: object) -> None:
    status = int(response.status_code)  # type: ignore[attr-defined]
    body = response.content  # type: ignore[attr-defined]
    assert status < 500, body[:500]
    if status >= 400 and status != 405:
        Problem.model_validate_json(body)


@pytest.mark.parametrize("who", sorted(AUTH))
@pytest.mark.parametrize("label", _labels())
def test_no_request_fails_the_server(
    fuzz_schema: schemathesis.schemas.BaseSchema, label: str, who: str
) -> None:
    operation = fuzz_schema.find_operation_by_label(label)
    assert operation is not None, label

    @given(case=operation.as_strategy())
    @FUZZ
    def run(case: schemathesis.Case) -> None:
        headers = AUTH[who]
        if who == "device":
            # The enrolled device on its own paths: garbage reaches ingest and uploads.
            headers = {"authorization": f"Bearer {DEVICE_TOKEN[0]}"}
            if case.path_parameters and "device" in case.path_parameters:
                case.path_parameters["device"] = DEVICE
        _check(case.call(headers=headers))

    run()


def test_openapi_lists_every_route_with_its_problems(fuzz_app: FastAPI) -> None:
    doc = fuzz_app.openapi()
    paths = set(doc["paths"])
    for path in (
        "/healthz",
        "/metrics",
        "/api/v1/enrol",
        "/api/v1/devices/{device}/head",
        "/api/v1/devices/{device}/records",
        "/api/v1/devices/{device}/media/{seq}",
        "/api/v1/log/checkpoint",
        "/api/v1/log/inclusion",
        "/api/v1/log/consistency",
        "/api/v1/time",
    ):
        assert path in paths, path
