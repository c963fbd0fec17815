"""CRUD benchmark, after Health Samurai's: many clients each looping over one clinical story.

One iteration creates 9 linked resources (Patient, Location, Organization, Practitioner,
Encounter, Observation, MedicationRequest, Claim, ExplanationOfBenefit), reads each,
updates each (PUT with a changed field), then deletes them in reverse order: 36 requests.
--clients such loops run at once for --warmup s, then --duration s are measured.

It runs twice, on a sealed vault and on a plaintext one (COFFRE_BENCH_PLAINTEXT=1), each
with a fresh vault and server, and prints both side by side.

    .venv/bin/python bench/crud.py [--clients 100] [--duration 30] [--workers 2]
        [--storage sqlite|postgresql|postgresql://USER@HOST/DB]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    FHIR_JSON,
    PUBLISHED_CRUD,
    CoffreServer,
    Table,
    add_common_options,
    add_machine_rows,
    add_server_options,
    client_session,
    cpu_usage,
    diagnostics_of,
    latency_summary,
    measured_window,
    mode_server,
    network_errors,
    parse_modes,
    print_header,
    run_async,
    storages,
    wait_for_idle,
    write_json,
)

TARGET_REQUESTS_PER_S = 5000
TARGET_P99_MS = 50.0
MAX_DIAGNOSTICS = 5
MAX_ITERATIONS_PER_CLIENT = 1_000_000  # a bound besides time
NETWORK_ERRORS = network_errors()

OPS = ("create", "read", "update", "delete")
EXPECTED = {"create": 201, "read": 200, "update": 200, "delete": 204}
CREATE, READ, UPDATE, DELETE = range(4)

# -- the resources: valid FHIR R4, with @Type@ where a created resource's id goes -----------

CODING_CHECKUP = {
    "system": "http://snomed.info/sct",
    "code": "185349003",
    "display": "Encounter for check up (procedure)",
}
INSURER = {"display": "Mutuelle Bench"}

TEMPLATES: dict[str, dict[str, Any]] = {
    "Patient": {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:coffre:bench:patient", "value": "@UNIQ@"}],
        "active": True,
        "name": [{"use": "official", "family": "Lovelace", "given": ["Ada"]}],
        "telecom": [{"system": "phone", "value": "+33 4 00 00 00 00", "use": "home"}],
        "gender": "female",
        "birthDate": "1985-12-10",
        "address": [
            {"line": ["12 rue des Lilas"], "city": "Lyon", "postalCode": "69003", "country": "FR"}
        ],
    },
    "Location": {
        "resourceType": "Location",
        "status": "active",
        "name": "Cardiology ward B",
        "mode": "instance",
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                        "code": "CARD",
                        "display": "Ambulatory Health Care Facilities; Clinic/Center; Rehabilitation: Cardiac Facilities",
                    }
                ]
            }
        ],
        "address": {"city": "Lyon", "postalCode": "69003", "country": "FR"},
    },
    "Organization": {
        "resourceType": "Organization",
        "identifier": [{"system": "urn:coffre:bench:organization", "value": "@UNIQ@"}],
        "active": True,
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov",
                        "display": "Healthcare Provider",
                    }
                ]
            }
        ],
        "name": "Hôpital du Banc d'Essai",
        "address": [{"city": "Lyon", "country": "FR"}],
    },
    "Practitioner": {
        "resourceType": "Practitioner",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "@UNIQ@"}],
        "active": True,
        "name": [{"family": "Curie", "given": ["Marie"], "prefix": ["Dr."]}],
        "gender": "female",
    },
    "Encounter": {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
            "display": "ambulatory",
        },
        "type": [{"coding": [CODING_CHECKUP]}],
        "subject": {"reference": "Patient/@Patient@"},
        "participant": [{"individual": {"reference": "Practitioner/@Practitioner@"}}],
        "period": {"start": "2026-05-04T09:00:00+02:00"},
        "location": [{"location": {"reference": "Location/@Location@"}}],
        "serviceProvider": {"reference": "Organization/@Organization@"},
    },
    "Observation": {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]
        },
        "subject": {"reference": "Patient/@Patient@"},
        "encounter": {"reference": "Encounter/@Encounter@"},
        "effectiveDateTime": "2026-05-04T09:10:00+02:00",
        "valueQuantity": {
            "value": 72,
            "unit": "beats/minute",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    },
    "MedicationRequest": {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [
                {
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                    "code": "314076",
                    "display": "lisinopril 10 MG Oral Tablet",
                }
            ]
        },
        "subject": {"reference": "Patient/@Patient@"},
        "encounter": {"reference": "Encounter/@Encounter@"},
        "authoredOn": "2026-05-04T09:20:00+02:00",
        "requester": {"reference": "Practitioner/@Practitioner@"},
        "dosageInstruction": [{"sequence": 1, "text": "one tablet daily"}],
    },
    "Claim": {
        "resourceType": "Claim",
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "professional",
                }
            ]
        },
        "use": "claim",
        "patient": {"reference": "Patient/@Patient@"},
        "billablePeriod": {
            "start": "2026-05-04T09:00:00+02:00",
            "end": "2026-05-04T09:30:00+02:00",
        },
        "created": "2026-05-04T09:30:00+02:00",
        "provider": {"reference": "Organization/@Organization@"},
        "priority": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/processpriority",
                    "code": "normal",
                }
            ]
        },
        "insurance": [{"sequence": 1, "focal": True, "coverage": INSURER}],
        "item": [
            {
                "sequence": 1,
                "productOrService": {"coding": [CODING_CHECKUP]},
                "encounter": [{"reference": "Encounter/@Encounter@"}],
                "net": {"value": 125.0, "currency": "EUR"},
            }
        ],
        "total": {"value": 125.0, "currency": "EUR"},
    },
    "ExplanationOfBenefit": {
        "resourceType": "ExplanationOfBenefit",
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "professional",
                }
            ]
        },
        "use": "claim",
        "patient": {"reference": "Patient/@Patient@"},
        "billablePeriod": {
            "start": "2026-05-04T09:00:00+02:00",
            "end": "2026-05-04T09:30:00+02:00",
        },
        "created": "2026-05-04T09:30:00+02:00",
        "insurer": INSURER,
        "provider": {"reference": "Practitioner/@Practitioner@"},
        "claim": {"reference": "Claim/@Claim@"},
        "outcome": "complete",
        "insurance": [{"focal": True, "coverage": INSURER}],
        "item": [
            {
                "sequence": 1,
                "productOrService": {"coding": [CODING_CHECKUP]},
                "encounter": [{"reference": "Encounter/@Encounter@"}],
                "net": {"value": 125.0, "currency": "EUR"},
            }
        ],
        "total": [
            {
                "category": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/adjudication",
                            "code": "submitted",
                        }
                    ]
                },
                "amount": {"value": 125.0, "currency": "EUR"},
            }
        ],
        "payment": {"amount": {"value": 100.0, "currency": "EUR"}},
    },
}
ORDER = tuple(TEMPLATES)


def _changed(resource_type: str, resource: dict[str, Any]) -> None:
    """The field an update changes."""
    if resource_type == "Patient":
        resource["telecom"][0]["value"] = "+33 4 11 11 11 11"
    elif resource_type == "Location":
        resource["name"] = "Cardiology ward C"
    elif resource_type == "Organization":
        resource["name"] = "Hôpital du Banc d'Essai (site nord)"
    elif resource_type == "Practitioner":
        resource["name"][0]["given"] = ["Marie", "Salomea"]
    elif resource_type == "Encounter":
        resource["status"] = "finished"
        resource["period"]["end"] = "2026-05-04T09:30:00+02:00"
    elif resource_type == "Observation":
        resource["valueQuantity"]["value"] = 75
    elif resource_type == "MedicationRequest":
        resource["status"] = "completed"
    elif resource_type == "Claim":
        resource["total"]["value"] = 130.0
        resource["item"][0]["net"]["value"] = 130.0
    elif resource_type == "ExplanationOfBenefit":
        resource["payment"]["amount"]["value"] = 104.0


@dataclass(frozen=True)
class Template:
    """A resource serialised once; an iteration only swaps the @...@ placeholders."""

    resource_type: str
    create: bytes
    update: bytes
    create_placeholders: tuple[bytes, ...]
    update_placeholders: tuple[bytes, ...]

    def created(self, values: dict[bytes, bytes]) -> bytes:
        return _fill(self.create, self.create_placeholders, values)

    def updated(self, values: dict[bytes, bytes]) -> bytes:
        return _fill(self.update, self.update_placeholders, values)


def _fill(body: bytes, placeholders: tuple[bytes, ...], values: dict[bytes, bytes]) -> bytes:
    for placeholder in placeholders:
        body = body.replace(placeholder, values[placeholder])
    return body


def build_templates() -> list[Template]:
    templates = []
    for resource_type, resource in TEMPLATES.items():
        create = orjson.dumps(resource)
        updated = {"resourceType": resource_type, "id": "@ID@", **copy.deepcopy(resource)}
        _changed(resource_type, updated)
        update = orjson.dumps(updated)
        names = [b"@UNIQ@", b"@ID@", *(f"@{t}@".encode() for t in ORDER)]
        templates.append(
            Template(
                resource_type,
                create,
                update,
                tuple(p for p in names if p in create),
                tuple(p for p in names if p in update),
            )
        )
    return templates


# -- the load --------------------------------------------------------------------------------


@dataclass
class Record:
    """Every answered request: (op, type index, end time, latency, status), in order."""

    samples: list[tuple[int, int, float, float, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    network_errors: int = 0
    iterations: int = 0

    def fail(self, text: str) -> None:
        if len(self.failures) < MAX_DIAGNOSTICS:
            self.failures.append(text)


class Stop(Exception):
    pass


class Client:
    def __init__(self, session: Any, base: str, templates: list[Template], record: Record) -> None:
        self.session = session
        self.base = base
        self.templates = templates
        self.record = record
        self.stop_at = float("inf")

    async def _call(
        self, op: int, index: int, method: str, url: str, body: bytes | None
    ) -> tuple[int, Any]:
        if time.monotonic() >= self.stop_at:
            raise Stop
        started = time.monotonic()
        try:
            async with self.session.request(
                method, url, data=body, headers={"Content-Type": FHIR_JSON} if body else None
            ) as response:
                content = await response.read()
                status, headers = response.status, response.headers
        except NETWORK_ERRORS as error:
            self.record.network_errors += 1
            self.record.fail(f"{method} {url}: {error!r}")
            return 0, None
        ended = time.monotonic()
        self.record.samples.append((op, index, ended, ended - started, status))
        if status != EXPECTED[OPS[op]]:
            self.record.fail(f"{method} {url}: HTTP {status}: {diagnostics_of(content)}")
        return status, headers

    async def iteration(self) -> bool:
        """One story; False if any request failed (the rest of the story is cut short)."""
        templates, base = self.templates, self.base
        values = {b"@UNIQ@": uuid.uuid4().hex.encode()}
        created: list[tuple[int, str]] = []
        ok = True
        try:
            for index, template in enumerate(templates):
                status, headers = await self._call(
                    CREATE,
                    index,
                    "POST",
                    f"{base}/{template.resource_type}",
                    template.created(values),
                )
                if status != 201:
                    ok = False
                    break
                # Location: {base}/{type}/{id}/_history/1
                resource_id = headers["Location"].rsplit("/", 3)[1]
                values[f"@{template.resource_type}@".encode()] = resource_id.encode()
                created.append((index, resource_id))
            if ok:
                for index, resource_id in created:
                    url = f"{base}/{templates[index].resource_type}/{resource_id}"
                    ok = (await self._call(READ, index, "GET", url, None))[0] == 200 and ok
                for index, resource_id in created:
                    template = templates[index]
                    values[b"@ID@"] = resource_id.encode()
                    url = f"{base}/{template.resource_type}/{resource_id}"
                    body = template.updated(values)
                    ok = (await self._call(UPDATE, index, "PUT", url, body))[0] == 200 and ok
            for index, resource_id in reversed(created):
                url = f"{base}/{templates[index].resource_type}/{resource_id}"
                ok = (await self._call(DELETE, index, "DELETE", url, None))[0] == 204 and ok
        except Stop:
            return False
        if ok:
            self.record.iterations += 1
        return ok

    async def loop(self) -> None:
        for _ in range(MAX_ITERATIONS_PER_CLIENT):
            if time.monotonic() >= self.stop_at:
                return
            await self.iteration()


async def load(
    args: argparse.Namespace, server: CoffreServer, templates: list[Template], profile: bool
) -> dict[str, Any]:
    record = Record()
    async with client_session(args.clients, args.timeout) as session:
        # One story first, alone: every resource must be valid and every answer as expected.
        check = Client(session, server.base_url, templates, record)
        if not await check.iteration():
            raise SystemExit(
                "the check iteration failed, nothing was timed:\n  " + "\n  ".join(record.failures)
            )
        record.samples.clear()
        record.iterations = 0
        clients = [Client(session, server.base_url, templates, record) for _ in range(args.clients)]
        started = time.monotonic()
        window_start_at = started + args.warmup
        window_end_at = window_start_at + args.duration
        for client in clients:
            client.stop_at = window_end_at
        tasks = [asyncio.create_task(client.loop()) for client in clients]
        await asyncio.sleep(max(0.0, window_start_at - time.monotonic()))
        iterations_before = record.iterations
        before, after = await measured_window(args, server, window_end_at, profile)
        iterations = record.iterations - iterations_before
        # Requests in flight at the end finish (each bounded by --timeout); none starts.
        await asyncio.wait(tasks, timeout=args.timeout + 5)
    return {"record": record, "before": before, "after": after, "iterations": iterations}


def run_mode(
    mode: str,
    args: argparse.Namespace,
    templates: list[Template],
    profile: bool,
    storage_url: str | None,
) -> dict[str, Any]:
    busy_before = wait_for_idle(args.wait_idle)
    server = mode_server(args, mode, storage_url)
    with server:
        outcome = run_async(load(args, server, templates, profile), args.loop)
    record: Record = outcome["record"]
    before, after = outcome["before"], outcome["after"]
    cpu = cpu_usage(before, after)
    window = [s for s in record.samples if before.wall <= s[2] <= after.wall]
    wall = cpu.wall
    per_op: dict[str, Any] = {}
    for op, name in enumerate(OPS):
        samples = [s for s in window if s[0] == op]
        ok = [s[3] for s in samples if s[4] == EXPECTED[name]]
        per_op[name] = {
            "requests": len(samples),
            "requests_per_s": len(samples) / wall,
            "errors": len(samples) - len(ok),
            **latency_summary(s[3] for s in samples),
        }
    per_type = {t: latency_summary(s[3] for s in window if s[1] == i) for i, t in enumerate(ORDER)}
    statuses: dict[str, int] = {}
    for s in window:
        key = f"{OPS[s[0]]} {s[4]}"
        statuses[key] = statuses.get(key, 0) + 1
    errors = sum(1 for s in window if s[4] != EXPECTED[OPS[s[0]]])
    return {
        "mode": mode,
        "requests": len(window),
        "requests_per_s": len(window) / wall,
        "errors": errors,
        "network_errors": record.network_errors,
        "iterations_per_s": outcome["iterations"] / wall,
        "latency": latency_summary(s[3] for s in window),
        "per_op": per_op,
        "per_type": per_type,
        "statuses": statuses,
        "failures": record.failures,
        "cpu": cpu.as_dict(),
        "machine_busy_before": busy_before,
    }


def report(results: dict[str, dict[str, Any]], modes: list[str], args: argparse.Namespace) -> None:
    def col(getter: Any) -> dict[str, Any]:
        return {mode: getter(results[mode]) for mode in modes}

    table = Table(
        f"CRUD: {args.clients} clients, {args.duration:.0f} s measured after {args.warmup:.0f} s"
        f" of warm-up, server --workers {args.workers}"
    )
    table.add("requests/s", col(lambda r: r["requests_per_s"]), better="higher")
    for p in ("p50", "p95", "p99"):
        table.add(
            f"latency {p} (ms)",
            col(lambda r, p=p: r["latency"][f"{p}_ms"]),
            "{:,.1f}",
            better="lower",
        )
    table.add(
        "stories (36 requests) completed/s",
        col(lambda r: r["iterations_per_s"]),
        "{:,.1f}",
        better="higher",
    )
    for op in OPS:
        table.add(
            f"{op} requests/s",
            col(lambda r, op=op: r["per_op"][op]["requests_per_s"]),
            better="higher",
        )
        table.add(
            f"{op} p50 (ms)",
            col(lambda r, op=op: r["per_op"][op]["p50_ms"]),
            "{:,.1f}",
            better="lower",
        )
        table.add(
            f"{op} p99 (ms)",
            col(lambda r, op=op: r["per_op"][op]["p99_ms"]),
            "{:,.1f}",
            better="lower",
        )
    table.add("requests answered unexpectedly", col(lambda r: r["errors"]))
    table.add("network errors", col(lambda r: r["network_errors"]))
    table.add("server CPU (s)", col(lambda r: r["cpu"]["server_cpu_s"]), "{:,.1f}", better="lower")
    table.add(
        "server CPU per request (ms)",
        col(lambda r: r["cpu"]["server_cpu_s"] / max(r["requests"], 1) * 1000),
        "{:,.3f}",
        better="lower",
    )
    table.add("generator CPU (s)", col(lambda r: r["cpu"]["generator_cpu_s"]), "{:,.1f}")
    table.add(
        "generator CPU per request (ms)",
        col(lambda r: r["cpu"]["generator_cpu_s"] / max(r["requests"], 1) * 1000),
        "{:,.3f}",
    )
    add_machine_rows(table, col)
    print()
    print(table.render(modes))
    for mode in modes:
        if results[mode]["failures"]:
            print(f"\nfirst failures ({mode}):")
            for line in results[mode]["failures"]:
                print("  " + line)
    print(
        "\nPublished (Health Samurai, 8 vCPUs per server, June 2026), requests/s: "
        + ", ".join(f"{k} ~{v:,}" for k, v in PUBLISHED_CRUD.items())
    )
    if "sealed" in results:
        sealed = results["sealed"]
        rps, p99 = sealed["requests_per_s"], sealed["latency"]["p99_ms"]
        print(
            f"Target: {TARGET_REQUESTS_PER_S:,} requests/s sealed on this machine:"
            f" {'met' if rps >= TARGET_REQUESTS_PER_S else 'NOT met'} ({rps:,.0f});"
            f" p99 under {TARGET_P99_MS:.0f} ms: {'met' if p99 < TARGET_P99_MS else 'NOT met'} ({p99:,.1f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=100,
        help="concurrent clients (default 100; the published run used 300)",
    )
    parser.add_argument(
        "--duration", type=float, default=30.0, help="measured seconds (default 30)"
    )
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of load before measuring (default 5)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="per-request timeout in s (default 60)"
    )
    add_common_options(parser)
    add_server_options(parser)
    args = parser.parse_args()
    if args.clients < 1 or args.workers < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--clients and --workers must be at least 1, --duration positive")
    modes = parse_modes(args.modes)
    templates = build_templates()
    print_header("bench/crud.py", args)
    results = {}
    with storages(args.storage) as new_storage:
        for n, mode in enumerate(modes):
            print(f"running {mode} ...", flush=True)
            profile = bool(args.py_spy) and n == 0
            results[mode] = run_mode(mode, args, templates, profile, new_storage())
    report(results, modes, args)
    write_json(args.json, {"benchmark": "crud", "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
