#!/usr/bin/env python3
# validate-sbom.py - checks SBOM and provenance files with independent validators (not cbuild's code).
#   usage: /opt/cbuild-tools/venv/bin/python scripts/validate-sbom.py FILE...
#   The format is taken from the content:
#     SPDX (spdxVersion)        spdx-tools' parser and validator (what `pyspdxtools -i FILE` runs)
#     CycloneDX (bomFormat)     cyclonedx-python-lib's strict JSON-schema validation of its specVersion
#     in-toto (_type)           in-toto-attestation's Statement protos (unknown fields refused) and, for
#                               SLSA provenance v1, its Provenance proto and resource descriptors
#   Prints one `OK <file> <format>` line per valid file; exits 1 after naming every problem.
#   The venv comes from scripts/install-deps.sh (PyPI: spdx-tools, cyclonedx-python-lib, in-toto-attestation).
import json
import os
import shutil
import sys
import tempfile


def spdx(path):
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    # pyspdxtools picks its parser by file name.
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "doc.spdx.json")
        shutil.copy(path, p)
        doc = parse_file(p)
    return [m.validation_message for m in validate_full_spdx_document(doc)]


def cyclonedx(path, spec_version):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    sv = SchemaVersion.from_version(spec_version)
    err = JsonStrictValidator(sv).validate_str(open(path).read())
    return [] if err is None else [str(err)]


def intoto(path, doc):
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    pb = json_format.Parse(open(path).read(), statement_pb2.Statement())
    Statement.copy_from_pb(pb).validate()
    if doc.get("predicateType") == "https://slsa.dev/provenance/v1":
        from in_toto_attestation.predicates.provenance.v1 import provenance_pb2

        prov = json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())
        bd = prov.build_definition
        if not bd.build_type or not prov.run_details.builder.id:
            return ["SLSA provenance v1 needs buildDefinition.buildType and runDetails.builder.id"]
        for rd in list(bd.resolved_dependencies) + list(prov.run_details.byproducts):
            ResourceDescriptor.copy_from_pb(rd).validate()
    return []


def main(files):
    bad = False
    for f in files:
        try:
            doc = json.load(open(f))
            if "spdxVersion" in doc:
                kind, problems = "spdx", spdx(f)
            elif doc.get("bomFormat") == "CycloneDX":
                kind, problems = "cyclonedx", cyclonedx(f, doc.get("specVersion", ""))
            elif "_type" in doc:
                kind, problems = "in-toto", intoto(f, doc)
            else:
                kind, problems = "unknown", ["neither SPDX, CycloneDX nor an in-toto statement"]
        except Exception as e:  # a parser refusing the document is a finding, not a crash
            kind, problems = "error", [f"{type(e).__name__}: {e}"]
        if problems:
            bad = True
            for p in problems:
                print(f"INVALID {f} {kind}: {p}")
        else:
            print(f"OK {f} {kind}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
