//! `GET /api/v1/alarms` in pages: `limit`, `cursor` and `next_cursor` (keyset, newest first),
//! the whole list for clients that pass nothing, `state=open`, a bad cursor, well scopes.

use espwatch_core::access::Role;
use espwatch_store::NewAlarm;
use serde_json::{Value, json};

use crate::support::*;

async fn raise(app: &TestApp, well: &str, condition: &str, minutes_ago: i64) -> i64 {
    let (alarm, _) = app
        .alarms
        .as_ref()
        .expect("alarm store")
        .raise_alarm(NewAlarm {
            well_id: well.parse().unwrap(),
            condition: condition.parse().unwrap(),
            severity: "major".parse().unwrap(),
            confidence: 0.8,
            started_at: espwatch_core::Timestamp::from_datetime(
                chrono::Utc::now() - chrono::Duration::minutes(minutes_ago),
            ),
            detail: json!({}),
        })
        .await
        .unwrap();
    alarm.id
}

fn ids(page: &Value) -> Vec<i64> {
    page["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect()
}

/// Follows `next_cursor` from `first` (a path with `?`) through every page with `client`.
async fn every_page(app: &TestApp, client: &reqwest::Client, first: &str) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut path = first.to_owned();
    loop {
        let (status, page) = app.send(client.get(app.url(&path))).await;
        assert_eq!(status, 200, "{path}: {page}");
        pages.push(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert!(pages.len() < 100, "pages do not end");
                path = format!("{first}&cursor={cursor}");
            }
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                return pages;
            }
        }
    }
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_listed_in_pages_that_follow_next_cursor() {
    let app = spawn_app().await;
    // 12 wells; three alarms share each start minute (ties ordered by id).
    for i in 0..12i64 {
        raise(&app, &format!("PG-{i:02}"), "gas_lock", 100 - (i / 3)).await;
    }
    for i in 0..5i64 {
        raise(&app, &format!("PG-{i:02}"), "pump_off", 50 - i).await;
    }
    app.alarms
        .as_ref()
        .unwrap()
        .clear_alarm(
            &"PG-03".parse().unwrap(),
            "pump_off".parse().unwrap(),
            espwatch_core::Timestamp::from_datetime(chrono::Utc::now()),
        )
        .await
        .unwrap()
        .expect("open");

    // A client that passes nothing gets the whole list, as before, and no next page.
    let (status, all) = app.get("/api/v1/alarms").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["next_cursor"], Value::Null, "{all}");
    let all = ids(&all);
    assert_eq!(all.len(), 17);

    // Pages of 5 are the same list, in the same order, without gaps or repeats.
    let client = app.client.clone();
    let pages = every_page(&app, &client, "/api/v1/alarms?limit=5").await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![5, 5, 5, 2]
    );
    assert_eq!(pages.concat(), all);
    // A page ending exactly at the end has no next page.
    let pages = every_page(&app, &client, "/api/v1/alarms?limit=17").await;
    assert_eq!(pages, vec![all.clone()]);

    // An alarm raised while a client pages (newest of all) moves nothing: the next page
    // starts after the last alarm seen.
    let (_, first) = app.get("/api/v1/alarms?limit=4").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    raise(&app, "PG-99", "gas_lock", 0).await;
    let (status, second) = app
        .get(&format!("/api/v1/alarms?limit=4&cursor={cursor}"))
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(ids(&second), all[4..8].to_vec());

    // `state=open`: raised or acknowledged, paged the same way.
    let (status, open) = app.get("/api/v1/alarms?state=open").await;
    assert_eq!(status, 200, "{open}");
    assert_eq!(open["alarms"].as_array().unwrap().len(), 17, "18 minus the cleared one");
    assert!(open["alarms"].as_array().unwrap().iter().all(|a| a["state"] != "cleared"), "{open}");
    let pages = every_page(&app, &client, "/api/v1/alarms?state=open&limit=6").await;
    assert_eq!(pages.concat(), ids(&open));
    let pages = every_page(&app, &client, "/api/v1/alarms?well_id=PG-01&limit=1").await;
    assert_eq!(pages.len(), 2);

    // A cursor this server did not give, or a limit out of bounds: 400 in the envelope.
    for bad in ["cursor=nope", "cursor=12_x", "cursor=", "limit=0", "limit=10001", "limit=many", "state=closed"] {
        let (status, body) = app.get(&format!("/api/v1/alarms?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["type"].is_string() && body["error"]["message"].is_string(), "{bad}: {body}");
    }
    let (_, body) = app.get("/api/v1/alarms?cursor=nope").await;
    assert_eq!(body["error"]["type"], "invalid_cursor", "{body}");

    // A scoped identity pages through its wells' alarms only: full pages while there are
    // more, whatever lies between them.
    let key = create_key(
        app.security.as_ref(),
        "pad-reader",
        Role::Viewer,
        Some(vec!["PG-01".into(), "PG-07".into(), "PG-11".into()]),
    )
    .await;
    let scoped = bearer_client(&key);
    let pages = every_page(&app, &scoped, "/api/v1/alarms?limit=1").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1, 1]);
    let (_, whole) = app.get("/api/v1/alarms").await;
    let want: Vec<i64> = whole["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| ["PG-01", "PG-07", "PG-11"].contains(&a["well_id"].as_str().unwrap()))
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(pages.concat(), want);

    // The OpenAPI description has the parameters and the answer's cursor.
    let (_, doc) = app.get("/api/v1/openapi.json").await;
    let params: Vec<&str> = doc["paths"]["/api/v1/alarms"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(params.contains(&"limit") && params.contains(&"cursor"), "{params:?}");
    assert!(
        doc["components"]["schemas"]["AlarmList"]["properties"]["next_cursor"].is_object(),
        "{}",
        doc["components"]["schemas"]["AlarmList"]
    );
    app.stop().await;
}
}

both_backends! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_and_to_list_the_alarms_active_in_a_range_in_pages() {
    let app = spawn_app().await;
    let store = app.alarms.clone().expect("alarm store");
    let at = |minutes_ago: i64| {
        espwatch_core::Timestamp::from_datetime(
            chrono::Utc::now() - chrono::Duration::minutes(minutes_ago),
        )
    };
    let iso = |minutes_ago: i64| {
        (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    // (well, condition, started, cleared) in minutes ago.
    let episodes: [(&str, &str, i64, Option<i64>); 5] = [
        ("RG-1", "gas_lock", 600, Some(500)),  // over before the range
        ("RG-1", "pump_off", 400, Some(100)),  // begun before it, lasting into it
        ("RG-1", "closed_valve", 250, Some(240)), // inside
        ("RG-2", "gas_lock", 220, None),       // open, begun inside
        ("RG-1", "overload", 50, Some(40)),    // after it
    ];
    let mut raised = Vec::new();
    for (w, condition, started, cleared) in episodes {
        let (alarm, _) = store
            .raise_alarm(NewAlarm {
                well_id: w.parse().unwrap(),
                condition: condition.parse().unwrap(),
                severity: "major".parse().unwrap(),
                confidence: 0.8,
                started_at: at(started),
                detail: json!({}),
            })
            .await
            .unwrap();
        if let Some(cleared) = cleared {
            store
                .clear_alarm(&w.parse().unwrap(), condition.parse().unwrap(), at(cleared))
                .await
                .unwrap()
                .expect("open");
        }
        raised.push(alarm.id);
    }
    let range = format!("from={}&to={}", iso(300), iso(200));
    let client = app.client.clone();
    let pages = every_page(&app, &client, &format!("/api/v1/alarms?{range}&limit=1")).await;
    assert_eq!(pages.concat(), vec![raised[3], raised[2], raised[1]], "newest start first");
    let pages = every_page(&app, &client, &format!("/api/v1/alarms?{range}&well_id=RG-1&limit=5")).await;
    assert_eq!(pages, vec![vec![raised[2], raised[1]]]);
    let (status, open_since) = app.get(&format!("/api/v1/alarms?from={}", iso(60))).await;
    assert_eq!(status, 200, "{open_since}");
    assert_eq!(ids(&open_since), vec![raised[4], raised[3]], "the others cleared before");
    let (status, up_to) = app.get(&format!("/api/v1/alarms?to={}&state=cleared", iso(300))).await;
    assert_eq!(status, 200, "{up_to}");
    assert_eq!(ids(&up_to), vec![raised[1], raised[0]]);

    // Not a time, or a range that ends before it begins: 400 naming the parameter.
    for (bad, parameter) in [
        ("from=yesterday".to_owned(), "from"),
        ("to=2026-13-01T00:00:00Z".to_owned(), "to"),
        (format!("from={}&to={}", iso(100), iso(200)), "from"),
    ] {
        let (status, body) = app.get(&format!("/api/v1/alarms?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["type"], "invalid_query", "{bad}: {body}");
        assert_eq!(body["error"]["details"]["parameter"], parameter, "{bad}: {body}");
    }
    let (_, doc) = app.get("/api/v1/openapi.json").await;
    let params: Vec<&str> = doc["paths"]["/api/v1/alarms"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(params.contains(&"from") && params.contains(&"to"), "{params:?}");
    app.stop().await;
}
}
