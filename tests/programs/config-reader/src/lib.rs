//! Reads config the operator set: `GET /config-reader/{key}` answers the value (404 when
//! unset), `GET /config-reader` every key and value as a JSON object. Its manifest requires
//! `greeting` and the secret `api_token`, so its routes answer 503 until both are set.

use plinth_sdk::{Plugin, Request, Response, Router, config};

struct ConfigReader;

impl Plugin for ConfigReader {
    fn handle(request: Request) -> Response {
        Router::new()
            .get("/config-reader", |_| match config::get_all() {
                Ok(all) => Response::json(&all.into_iter().collect::<std::collections::BTreeMap<_, _>>()),
                Err(e) => Response::error(500, "config_failed", &e.to_string()),
            })
            .get("/config-reader/{key}", |request| {
                let key = request.param("key").unwrap_or_default();
                match config::get(key) {
                    Ok(Some(value)) => Response::text(value),
                    Ok(None) => Response::error(404, "not_set", key),
                    Err(e) => Response::error(500, "config_failed", &e.to_string()),
                }
            })
            .handle(request)
    }
}

plinth_sdk::export!(ConfigReader);
