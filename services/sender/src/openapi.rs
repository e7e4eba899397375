//! The OpenAPI document served at `/openapi.json` (Swagger UI at `/swagger`).
//! The schemas here describe the wire shapes; the handlers parse by hand so
//! that every bad field can be named.

use std::collections::BTreeMap;

use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

#[derive(OpenApi)]
#[openapi(
    info(title = "sender", description = "Entity items; every write is published through a transactional outbox."),
    paths(crate::routes::items::create, list, get),
    components(schemas(CreateItem, ItemSchema, PageSchema, ProblemSchema))
)]
pub struct ApiDoc;

#[derive(ToSchema)]
#[schema(as = CreateItem)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateItem {
    /// 1 to 200 characters, not blank.
    #[schema(min_length = 1, max_length = 200, example = "widget")]
    name: String,
    /// Any decimal number, kept exactly: up to 28 significant digits (and 28 decimal places), magnitude at most 7.9e28.
    #[schema(value_type = f64, example = 12.5, minimum = -7.9e28, maximum = 7.9e28)]
    value: String,
}

#[derive(ToSchema)]
#[schema(as = Item)]
#[allow(dead_code)]
#[allow(non_snake_case)]
pub struct ItemSchema {
    id: Uuid,
    name: String,
    #[schema(value_type = f64)]
    value: String,
    #[schema(format = DateTime)]
    createdAt: String,
}

#[derive(ToSchema)]
#[schema(as = ItemPage)]
#[allow(dead_code)]
pub struct PageSchema {
    items: Vec<ItemSchema>,
    /// Pass as `after` to get the next page; absent on the last page.
    next: Option<Uuid>,
}

/// RFC 9457 problem details.
#[derive(ToSchema)]
#[schema(as = ProblemDetails)]
#[allow(dead_code)]
pub struct ProblemSchema {
    #[schema(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: Option<String>,
    /// What is wrong with each named field.
    errors: Option<BTreeMap<String, Vec<String>>>,
}

/// `GET /api/EntityItems?limit=&after=` (served by `entity_items::api::list`).
#[utoipa::path(get, path = "/api/EntityItems",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "items per page, 1 to 1000 (default 100)"),
        ("after" = Option<Uuid>, Query, description = "the `next` of the previous page, or the id of the last item read: reading on from it later returns what became visible since, whatever its id"),
    ),
    responses(
        (status = 200, description = "a page of items in the order they became visible (a row shows once every older transaction has ended, so none can appear behind a cursor)", body = PageSchema),
        (status = 400, description = "bad `limit` or `after`, or an unknown parameter", body = ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "`after` is no item's id", body = ProblemSchema, content_type = "application/problem+json"),
    ))]
#[allow(dead_code)]
fn list() {}

/// `GET /api/EntityItems/{id}` (served by `entity_items::api::get`).
#[utoipa::path(get, path = "/api/EntityItems/{id}",
    params(("id" = Uuid, Path, description = "the item's id")),
    responses(
        (status = 200, description = "the item", body = ItemSchema),
        (status = 400, description = "the id is not a UUID", body = ProblemSchema, content_type = "application/problem+json"),
        (status = 404, description = "no such item", body = ProblemSchema, content_type = "application/problem+json"),
    ))]
#[allow(dead_code)]
fn get() {}
