"""Validate Kubernetes manifests against several versions' schemas in one process.

Run with the deployment tools' Python (tools/deploy/.venv, where kubernetes-validate is):
    python validate_manifests.py VERSION[,VERSION...] FILE...
Prints one line per problem; exit 0 when there is none. Kinds without a schema are
reported as "no schema: <apiVersion>/<kind>" for the caller to judge.
"""

import json
import sys

import kubernetes_validate
import yaml


def main() -> int:
    versions = sys.argv[1].split(",")
    seen = set()
    problems = []
    for path in sys.argv[2:]:
        with open(path) as file:
            for document in yaml.safe_load_all(file):
                if not document:
                    continue
                key = json.dumps(document, sort_keys=True)
                if key in seen:  # the same object from several values files
                    continue
                seen.add(key)
                name = f"{document['kind']} {document['metadata']['name']}"
                for version in versions:
                    try:
                        kubernetes_validate.validate(document, version, strict=True)
                    except kubernetes_validate.SchemaNotFoundError:
                        problems.append(f"no schema: {document['apiVersion']}/{document['kind']}")
                        break
                    except kubernetes_validate.ValidationError as error:
                        problems.append(f"{version} {name}: {error.message} at {list(error.path)}")
    print("\n".join(sorted(set(problems))))
    return 1 if any(not p.startswith("no schema:") for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
