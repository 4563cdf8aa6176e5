"""The background audit: judge the objects already in the cluster with the validating policies, publish policy
reports, and announce changes of violation as CloudEvents.

- `api`: requests through the `kubernetes` client's ApiClient (plain JSON, pages, retries, a rate limit);
- `targets`: which resources the policies match, and which policies take part;
- `scan`: one pass, page by page, each object evaluated by `webhook.admission.admit` as a CREATE;
- `reports`: OpenReports `Report`/`ClusterReport` or wgpolicyk8s.io `PolicyReport`/`ClusterPolicyReport`;
- `ledger`: the last state per (policy, object), its changes (events) and the time each result was found;
- `leader`: Lease leader election (one replica audits);
- `service`: the loop in `webhook serve --audit`, with its metrics; `command`: `webhook audit`.
"""
