"""The administrator's tools: check, status, report, jobs, audit, init, keys, offline validate/route, the template."""
