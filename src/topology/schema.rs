//! A JSON Schema of `apphost.yaml`, for editors (`apphost schema`).

use serde_json::{Value, json};

pub fn json_schema() -> Value {
    let duration =
        json!({ "type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$", "examples": ["500ms", "10s", "2m"] });
    let port = json!({
        "oneOf": [
            { "type": "integer", "minimum": 0, "maximum": 65535, "description": "the container port (or, for a process, the port it listens on)" },
            { "type": "string", "pattern": "^[0-9]+:[0-9]+$", "description": "HOST:TARGET" },
            { "type": "object", "additionalProperties": false, "properties": {
                "name": { "type": "string" },
                "host": { "type": "integer", "minimum": 0, "maximum": 65535, "description": "loopback port on this machine; free one when left out" },
                "target": { "type": "integer", "minimum": 1, "maximum": 65535, "description": "port inside the container" }
            }}
        ]
    });
    let condition = json!({ "enum": ["started", "healthy", "completed"] });
    let resource = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["kind"],
        "properties": {
            "kind": { "enum": crate::kinds::Kind::names() },
            "image": { "type": "string", "description": "container image; postgres and artemis default to the official images" },
            "command": { "type": "string", "description": "executable: the program to run" },
            "package": { "type": "string", "description": "project: the cargo package (default: the resource name)" },
            "args": { "type": "array", "items": { "type": "string" } },
            "working_dir": { "type": "string" },
            "env": { "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } },
            "ports": { "type": "array", "items": port },
            "persistent": { "type": "boolean", "description": "keep the data (container and volume, or data folder) across runs" },
            "references": { "type": "array", "items": { "type": "string" }, "description": "resources whose connection string or URL is injected" },
            "wait_for": { "oneOf": [
                { "type": "array", "items": { "type": "string" } },
                { "type": "object", "additionalProperties": condition }
            ]},
            "health": { "type": "object", "additionalProperties": false, "properties": {
                "http": { "type": "string", "description": "path answered with 2xx" },
                "tcp": { "type": "string", "description": "port name that accepts a connection" },
                "exec": { "oneOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }], "description": "command exiting 0; `{port:NAME}` is replaced by the port" },
                "log": { "type": "string", "description": "regular expression matched against output lines" },
                "amqp": { "type": "string", "description": "port name where an AMQP 1.0 connection opens (with the resource's user)" },
                "pg_isready": { "type": "string", "description": "port name where PostgreSQL answers a startup handshake (with the user and database of the resource's connection string), as pg_isready checks" },
                "port": { "type": "string" },
                "interval": duration, "timeout": duration, "start_period": duration,
                "retries": { "type": "integer", "minimum": 1 }
            }},
            "restart": { "oneOf": [
                { "enum": ["no", "on_failure", "always"] },
                { "type": "object", "additionalProperties": false, "properties": {
                    "policy": { "enum": ["no", "on_failure", "always"] },
                    "max_restarts": { "type": "integer", "minimum": 0 },
                    "backoff": duration, "max_backoff": duration, "reset_after": duration
                }}
            ]},
            "replicas": { "type": "integer", "minimum": 1, "maximum": 64 },
            "shutdown": { "type": "object", "additionalProperties": false, "properties": {
                "signal": { "type": "string", "examples": ["SIGTERM", "SIGINT"] },
                "grace": duration
            }},
            "runtime": { "enum": ["auto", "docker", "process"] },
            "database": { "type": "string" },
            "user": { "type": "string" }
        }
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://apphost.dev/schema/apphost.json",
        "title": "apphost.yaml",
        "type": "object",
        "additionalProperties": false,
        "required": ["resources"],
        "properties": {
            "name": { "type": "string", "pattern": "^[a-z][a-z0-9_-]*$" },
            "runtime": { "enum": ["auto", "docker", "process"] },
            "resources": { "type": "object", "propertyNames": { "pattern": "^[a-z][a-z0-9_-]*$" }, "additionalProperties": resource },
            "dashboard": { "type": "object", "additionalProperties": false, "properties": {
                "metrics_from": { "type": "array", "items": { "type": "string" } }
            }}
        }
    })
}
