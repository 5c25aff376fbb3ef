//! GraphiQL, the playground served on `GET /graphql` to browsers in development: its page and, by default, its
//! scripts and styles from Folio itself (`assets/graphiql`, vendored from the npm packages with their licences
//! in `assets/graphiql/LICENSES.md`), so it works without internet. `FOLIO_GRAPHIQL_CDN` loads them from a CDN
//! instead (unpkg's path layout).
//!
//! Its fetcher sends subscriptions and `@live` queries over the WebSocket (`graphql-ws`, with the headers
//! editor's `Authorization` in `connection_init`), everything else over HTTP.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// One vendored asset: its file name, npm package and path inside it (for the CDN), content type and bytes.
struct Asset {
    name: &'static str,
    cdn_path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 5] = [
    Asset {
        name: "react.production.min.js",
        cdn_path: "react@18.3.1/umd/react.production.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/graphiql/react.production.min.js"),
    },
    Asset {
        name: "react-dom.production.min.js",
        cdn_path: "react-dom@18.3.1/umd/react-dom.production.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
    },
    Asset {
        name: "graphiql.min.js",
        cdn_path: "graphiql@4.1.2/graphiql.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/graphiql/graphiql.min.js"),
    },
    Asset {
        name: "graphiql.min.css",
        cdn_path: "graphiql@4.1.2/graphiql.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/graphiql/graphiql.min.css"),
    },
    Asset {
        name: "graphql-ws.min.js",
        cdn_path: "graphql-ws@6.0.8/umd/graphql-ws.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/graphiql/graphql-ws.min.js"),
    },
];

/// Where the page loads assets from: this server's `/graphiql/` (versioned, so cacheable forever) or the CDN.
fn url(asset: &Asset, cdn: Option<&str>) -> String {
    match cdn {
        Some(base) => format!("{base}/{}", asset.cdn_path),
        None => format!("/graphiql/{VERSION}/{}", asset.name),
    }
}

/// Part of every asset URL: a new set of assets gets new URLs, so browsers never mix versions.
const VERSION: &str = "4.1.2";

/// The GraphiQL page.
pub fn page(cdn: Option<&str>) -> Html<String> {
    let [react, react_dom, graphiql, css, graphql_ws] = &ASSETS;
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Folio GraphiQL</title>
<style>body {{ margin: 0; height: 100vh; }} #graphiql {{ height: 100vh; }}</style>
<link rel="stylesheet" href="{css}">
<script src="{react}"></script>
<script src="{react_dom}"></script>
<script src="{graphiql}"></script>
<script src="{graphql_ws}"></script>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script>
(function () {{
  var httpUrl = new URL('/graphql', location.href).toString();
  var wsUrl = httpUrl.replace(/^http/, 'ws');
  var overHttp = GraphiQL.createFetcher({{ url: httpUrl }});
  var sockets = {{}};
  // One WebSocket per Authorization value: the credential travels in connection_init.
  function socket(headers) {{
    var auth = (headers && (headers.Authorization || headers.authorization)) || '';
    if (!sockets[auth]) {{
      sockets[auth] = graphqlWs.createClient({{
        url: wsUrl,
        lazy: true,
        connectionParams: auth ? {{ Authorization: auth }} : {{}},
      }});
    }}
    return sockets[auth];
  }}
  // Subscriptions and @live queries stream; the server decides for sure, this only picks the transport.
  function streams(query) {{
    return /(^|[^\w])subscription[\s{{(]/.test(query || '') || /@live\b/.test(query || '');
  }}
  function fetcher(params, options) {{
    if (!streams(params.query)) return overHttp(params, options);
    return socket(options && options.headers).iterate({{
      query: params.query,
      variables: params.variables,
      operationName: params.operationName,
    }});
  }}
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {{ fetcher: fetcher, isHeadersEditorEnabled: true }})
  );
}})();
</script>
</body>
</html>
"#,
        css = url(css, cdn),
        react = url(react, cdn),
        react_dom = url(react_dom, cdn),
        graphiql = url(graphiql, cdn),
        graphql_ws = url(graphql_ws, cdn),
    ))
}

/// `GET /graphiql/{version}/{file}`: a vendored asset, cacheable for a year (its URL changes with its version).
pub async fn asset(Path((version, name)): Path<(String, String)>) -> Response {
    let found = ASSETS
        .iter()
        .find(|a| a.name == name)
        .filter(|_| version == VERSION);
    match found {
        Some(asset) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(asset.content_type),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
            ],
            asset.bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
