//! `GET /openapi.json`: the endpoint described in OpenAPI 3.1.

use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

fn error_responses() -> Value {
    let e = json!({ "$ref": "#/components/responses/Error" });
    json!({
        "400": e, "401": e, "403": e, "404": e, "408": e, "409": e, "413": e,
        "422": e, "429": e, "500": e, "503": e
    })
}

fn with_errors(mut ok: Value) -> Value {
    if let (Some(map), Some(errors)) = (ok.as_object_mut(), error_responses().as_object()) {
        for (k, v) in errors {
            map.insert(k.clone(), v.clone());
        }
    }
    ok
}

/// [`with_errors`], and 415 for a body without the endpoint's Content-Type.
fn with_body_errors(ok: Value) -> Value {
    let mut v = with_errors(ok);
    v["415"] = json!({ "$ref": "#/components/responses/Error" });
    v
}

fn result_ok() -> Value {
    json!({ "200": {
        "description": "The result. JSON by default; `Accept: application/x-ndjson` or `text/csv` streams it.",
        "content": {
            "application/json": { "schema": { "$ref": "#/components/schemas/Result" } },
            "application/x-ndjson": { "schema": { "type": "string" } },
            "text/csv": { "schema": { "type": "string" } }
        }
    }})
}

fn param(name: &str, location: &str, required: bool, description: &str) -> Value {
    json!({ "name": name, "in": location, "required": required,
            "description": description, "schema": { "type": "string" } })
}

fn table_param() -> Value {
    param(
        "table",
        "path",
        true,
        "`table` or `schema.table`, checked against the catalog",
    )
}

/// The document.
pub fn spec() -> Value {
    let series_params = |extra: Vec<Value>| {
        let mut p = vec![
            table_param(),
            param("from", "query", false, "Start (inclusive), ISO-8601"),
            param("to", "query", false, "End (exclusive), ISO-8601"),
            param("series_id", "query", false, "Series ids, comma-separated"),
        ];
        p.extend(extra);
        Value::from(p)
    };
    let row = json!({ "type": "object", "additionalProperties": true });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "TideGate HTTP/JSON API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every statement passes the broker's pipeline: classification, policy plugins, result cache, read/write routing. Pick the database with the X-TideGate-Database header."
        },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "basic": { "type": "http", "scheme": "basic" }
            },
            "schemas": {
                "Result": { "type": "object", "properties": {
                    "columns": { "type": "array", "items": { "type": "object", "properties": {
                        "name": { "type": "string" }, "type": { "type": ["string", "null"] },
                        "type_oid": { "type": "integer" } } } },
                    "rows": { "type": "array", "items": { "type": "array" } },
                    "command": { "type": "string" },
                    "row_count": { "type": "integer" } } },
                "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": {
                    "code": { "type": "string", "description": "SQLSTATE or tidegate.*" },
                    "message": { "type": "string" },
                    "line": { "type": "integer", "description": "Ingest: the rejected input line" } } } } },
                "Row": row
            },
            "responses": {
                "Error": { "description": "An error", "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        },
        "security": [ { "bearer": [] }, { "basic": [] } ],
        "paths": {
            "/v1/sql": {
                "post": {
                    "summary": "Run one statement",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": {
                        "type": "object", "required": ["sql"], "properties": {
                            "sql": { "type": "string" },
                            "params": { "type": "array", "description": "Bound to $1, $2, …" } } } } } },
                    "responses": with_body_errors(result_ok())
                },
                "get": {
                    "summary": "Run one provably read-only statement",
                    "parameters": [ param("sql", "query", true, "The statement"),
                                    param("params", "query", false, "A JSON array") ],
                    "responses": with_errors(result_ok())
                }
            },
            "/v1/series/{table}": { "get": {
                "summary": "get_range: points in [from, to)",
                "parameters": series_params(vec![
                    param("limit", "query", false, "At most this many points"),
                    param("order", "query", false, "asc (default) or desc")]),
                "responses": with_errors(result_ok()) } },
            "/v1/series/{table}/aggregate": { "get": {
                "summary": "get_aggregated: aggregates per series and time bucket",
                "parameters": series_params(vec![
                    param("interval", "query", false, "Bucket width: 30s, 5m, 1h, 1d (default 1h)"),
                    param("agg", "query", false, "column:function,… (avg, min, max, sum, count, stddev, variance, first, last)"),
                    param("fill", "query", false, "true: empty buckets as rows of nulls")]),
                "responses": with_errors(result_ok()) } },
            "/v1/series/{table}/latest": { "get": {
                "summary": "get_latest: the newest points (of each named series)",
                "parameters": [ table_param(),
                    param("series_id", "query", false, "Series ids, comma-separated (default: all)"),
                    param("limit", "query", false, "Points: in all, or per named series (default 1)") ],
                "responses": with_errors(result_ok()) } },
            "/v1/series/{table}/points": { "post": {
                "summary": "Store points: one COPY, one transaction; replied after commit",
                "parameters": [ table_param() ],
                "requestBody": { "required": true, "content": {
                    "application/json": { "schema": { "type": "array", "items": row } },
                    "application/x-ndjson": { "schema": { "type": "string" } },
                    "text/csv": { "schema": { "type": "string" } } } },
                "responses": with_body_errors(json!({ "200": { "description": "Stored", "content": {
                    "application/json": { "schema": { "type": "object", "properties": {
                        "inserted": { "type": "integer" } } } } } } })) } },
            "/v1/tables/{table}/rows": { "post": {
                "summary": "Repository add",
                "parameters": [ table_param() ],
                "requestBody": { "required": true, "content": { "application/json": { "schema": row } } },
                "responses": with_body_errors(json!({ "201": { "description": "The stored row",
                    "content": { "application/json": { "schema": row } } } })) } },
            "/v1/tables/{table}/rows/{id}": {
                "parameters": [ table_param(), param("id", "path", true, "Primary key value") ],
                "get": { "summary": "Repository get", "responses": with_errors(json!({ "200": {
                    "description": "The row", "content": { "application/json": { "schema": row } } } })) },
                "put": { "summary": "Repository update",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": row } } },
                    "responses": with_body_errors(json!({ "200": { "description": "The updated row",
                        "content": { "application/json": { "schema": row } } } })) },
                "delete": { "summary": "Repository delete",
                    "responses": with_errors(json!({ "204": { "description": "Deleted" } })) }
            },
            "/healthz": { "get": { "summary": "Alive", "security": [],
                "responses": { "200": { "description": "The process serves" } } } },
            "/readyz": { "get": { "summary": "Ready: primary reachable, plugins loaded, audit table writable, not shutting down",
                "security": [],
                "description": "Anyone gets the status and which part is not ready (booleans); http.admin_users (Basic or Bearer) also get plugin files, counters, load errors and the audit writer's reason.",
                "responses": { "200": { "description": "Ready" }, "503": { "description": "Not ready, with the part that is not" } } } },
            "/openapi.json": { "get": { "summary": "This document", "security": [],
                "responses": { "200": { "description": "OpenAPI 3.1" } } } }
        }
    })
}

/// The handler.
pub async fn document() -> Response {
    axum::Json(spec()).into_response()
}
