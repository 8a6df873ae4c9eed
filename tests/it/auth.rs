//! Sign-up, sign-in, sign-out and the current user (classic cases A1–A14), and the session
//! rules: the classic cookie format, Bearer tokens, and refusal of forged or expired tokens.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{
    AppOptions, Auth, JWT_KEY, Response, TestApp, classic_session, is_object_id, random_id,
    session_for_token, sign_token, token_claims, token_in_session, unix_now,
};

async fn signup(app: &TestApp, body: Value) -> Response {
    app.post("/api/users/signup", &Auth::None, &body).await
}

async fn signin(app: &TestApp, body: Value) -> Response {
    app.post("/api/users/signin", &Auth::None, &body).await
}

async fn current_user(app: &TestApp, auth: &Auth) -> Response {
    let response = app.get("/api/users/currentuser", auth).await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    response
}

#[track_caller]
fn assert_no_cookie(response: &Response) {
    assert!(
        response.set_cookies().is_empty(),
        "a failed request sets no cookie: {response:?}"
    );
}

/// The attributes of the `session` cookie a response sets, lower-cased, without the value.
fn session_cookie_attributes(response: &Response) -> Vec<String> {
    let cookie = response
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("session="))
        .expect("a session cookie");
    cookie
        .split(';')
        .skip(1)
        .map(|attribute| attribute.trim().to_ascii_lowercase())
        .collect()
}

// A1, A6
#[tokio::test]
async fn signup_returns_201_with_the_user_a_cookie_and_a_token() {
    let app = TestApp::spawn().await;
    let response = signup(
        &app,
        json!({"email": "test@test.com", "password": "password"}),
    )
    .await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    assert_eq!(response.body["email"], "test@test.com");
    assert!(is_object_id(&response.body["id"]), "{response:?}");
    let keys: Vec<&String> = response.body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        2,
        "the body is exactly {{id, email}}: {response:?}"
    );

    let attributes = session_cookie_attributes(&response);
    assert!(
        attributes.contains(&"httponly".to_string()),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&"samesite=lax".to_string()),
        "{attributes:?}"
    );
    assert!(attributes.contains(&"path=/".to_string()), "{attributes:?}");
    assert!(
        !attributes.contains(&"secure".to_string()),
        "no Secure without --secure-cookies: {attributes:?}"
    );

    let token = response
        .headers
        .get("x-auth-token")
        .expect("X-Auth-Token header")
        .to_str()
        .unwrap()
        .to_string();
    let claims = token_claims(&token);
    assert_eq!(claims["id"], response.body["id"]);
    assert_eq!(claims["email"], "test@test.com");
    assert!(claims["iat"].is_u64(), "{claims}");
    assert!(
        claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap(),
        "tokens issued here carry exp: {claims}"
    );
}

#[tokio::test]
async fn the_session_cookie_is_base64_json_holding_the_jwt() {
    let app = TestApp::spawn().await;
    let user = app.signup("cookie@test.com", "password").await;
    let token = token_in_session(&user.session);
    let claims = token_claims(&token);
    assert_eq!(claims["id"], user.id.as_str());
    assert_eq!(claims["email"], "cookie@test.com");
    let header: Value = {
        use base64::Engine;
        let first = token.split('.').next().unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(first)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    assert_eq!(header["alg"], "HS256");
}

#[tokio::test]
async fn secure_cookies_flag_marks_the_cookie_secure() {
    let app = TestApp::spawn_with(AppOptions::with_args(&["--secure-cookies"])).await;
    let response = signup(
        &app,
        json!({"email": "secure@test.com", "password": "password"}),
    )
    .await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    let attributes = session_cookie_attributes(&response);
    assert!(attributes.contains(&"secure".to_string()), "{attributes:?}");
    assert!(
        attributes.contains(&"httponly".to_string()),
        "{attributes:?}"
    );
}

// A2, A7
#[tokio::test]
async fn signup_with_an_invalid_email_is_refused() {
    let app = TestApp::spawn().await;
    for email in ["alskdflaskjfd", "", "a@", "@example.com", "a b@example.com"] {
        let response = signup(&app, json!({"email": email, "password": "password"})).await;
        response.assert_field_error(StatusCode::BAD_REQUEST, "Email must be valid", "email");
        assert_no_cookie(&response);
    }
}

// A3, A7
#[tokio::test]
async fn signup_with_an_invalid_password_is_refused() {
    let app = TestApp::spawn().await;
    let too_long = "x".repeat(21);
    for password in ["p", "abc", too_long.as_str(), "   p   "] {
        let response = signup(
            &app,
            json!({"email": "test@test.com", "password": password}),
        )
        .await;
        response.assert_field_error(
            StatusCode::BAD_REQUEST,
            "Password must be between 4 and 20 characters",
            "password",
        );
        assert_no_cookie(&response);
    }
    // The bounds themselves are valid.
    let response = signup(&app, json!({"email": "four@test.com", "password": "abcd"})).await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    let twenty = "y".repeat(20);
    let response = signup(
        &app,
        json!({"email": "twenty@test.com", "password": twenty}),
    )
    .await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
}

// A4
#[tokio::test]
async fn signup_with_a_missing_email_or_password_names_the_field() {
    let app = TestApp::spawn().await;
    let response = signup(&app, json!({"email": "test@test.com"})).await;
    response.assert_field_error(
        StatusCode::BAD_REQUEST,
        "Password must be between 4 and 20 characters",
        "password",
    );
    assert_no_cookie(&response);

    let response = signup(&app, json!({"password": "password"})).await;
    response.assert_field_error(StatusCode::BAD_REQUEST, "Email must be valid", "email");
    assert_no_cookie(&response);

    let response = signup(&app, json!({})).await;
    response.assert_field(StatusCode::BAD_REQUEST, "email");
    response.assert_field(StatusCode::BAD_REQUEST, "password");
}

// A5, A7
#[tokio::test]
async fn signup_disallows_duplicate_emails_whatever_their_case() {
    let app = TestApp::spawn().await;
    let first = signup(
        &app,
        json!({"email": "test@test.com", "password": "password"}),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");

    let again = signup(
        &app,
        json!({"email": "test@test.com", "password": "password"}),
    )
    .await;
    again.assert_error(StatusCode::BAD_REQUEST, "Email in use");
    assert_no_cookie(&again);

    let other_case = signup(
        &app,
        json!({"email": "Test@TEST.com", "password": "other-password"}),
    )
    .await;
    other_case.assert_error(StatusCode::BAD_REQUEST, "Email in use");
    assert_no_cookie(&other_case);
}

// A8, A11
#[tokio::test]
async fn signin_with_an_unknown_email_fails() {
    let app = TestApp::spawn().await;
    let response = signin(
        &app,
        json!({"email": "nobody@test.com", "password": "password"}),
    )
    .await;
    response.assert_error(StatusCode::BAD_REQUEST, "Invalid credentials");
    assert_no_cookie(&response);
}

// A9, A11
#[tokio::test]
async fn signin_with_a_wrong_password_fails() {
    let app = TestApp::spawn().await;
    app.signup("test@test.com", "password").await;
    let response = signin(
        &app,
        json!({"email": "test@test.com", "password": "wrong-password"}),
    )
    .await;
    response.assert_error(StatusCode::BAD_REQUEST, "Invalid credentials");
    assert_no_cookie(&response);
}

#[tokio::test]
async fn signin_validates_its_input() {
    let app = TestApp::spawn().await;
    for body in [
        json!({"email": "test@test.com"}),
        json!({"email": "test@test.com", "password": ""}),
    ] {
        let response = signin(&app, body).await;
        response.assert_field_error(
            StatusCode::BAD_REQUEST,
            "You must supply a password",
            "password",
        );
        assert_no_cookie(&response);
    }
    let response = signin(&app, json!({"email": "nope", "password": "password"})).await;
    response.assert_field_error(StatusCode::BAD_REQUEST, "Email must be valid", "email");
    assert_no_cookie(&response);
}

// A10
#[tokio::test]
async fn signin_with_valid_credentials_sets_a_cookie() {
    let app = TestApp::spawn().await;
    let user = app.signup("test@test.com", "password").await;
    let response = signin(
        &app,
        json!({"email": "test@test.com", "password": "password"}),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body["id"], user.id.as_str());
    assert_eq!(response.body["email"], "test@test.com");
    assert!(
        response.headers.contains_key("x-auth-token"),
        "{response:?}"
    );
    let session = response.session_cookie().expect("a session cookie");
    let attributes = session_cookie_attributes(&response);
    assert!(
        attributes.contains(&"httponly".to_string()),
        "{attributes:?}"
    );

    let me = current_user(&app, &Auth::Cookie(session)).await;
    assert_eq!(me.body["currentUser"]["id"], user.id.as_str());
}

#[tokio::test]
async fn signin_compares_emails_case_insensitively() {
    let app = TestApp::spawn().await;
    let user = app.signup("test@test.com", "password").await;
    let response = signin(
        &app,
        json!({"email": "TEST@Test.com", "password": "password"}),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body["id"], user.id.as_str());
}

// A12
#[tokio::test]
async fn signout_clears_the_cookie() {
    let app = TestApp::spawn().await;
    let user = app.signup("test@test.com", "password").await;
    let response = app
        .post("/api/users/signout", &user.cookie(), &json!({}))
        .await;
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert_eq!(response.body, json!({}));
    assert_eq!(
        response.set_cookies().first().map(String::as_str),
        Some("session=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly"),
        "{response:?}"
    );
}

// A13
#[tokio::test]
async fn currentuser_describes_the_signed_in_user() {
    let app = TestApp::spawn().await;
    let user = app.signup("test@test.com", "password").await;
    let response = current_user(&app, &user.cookie()).await;
    let current = &response.body["currentUser"];
    assert_eq!(current["id"], user.id.as_str());
    assert_eq!(current["email"], "test@test.com");
    assert!(current["iat"].is_u64(), "{response:?}");
}

// A14
#[tokio::test]
async fn currentuser_is_null_without_a_session() {
    let app = TestApp::spawn().await;
    let response = current_user(&app, &Auth::None).await;
    assert_eq!(response.body, json!({"currentUser": null}));
}

#[tokio::test]
async fn bearer_tokens_work_like_the_cookie() {
    let app = TestApp::spawn().await;
    let user = app.signup("bearer@test.com", "password").await;
    let by_bearer = current_user(&app, &user.bearer()).await;
    let by_cookie = current_user(&app, &user.cookie()).await;
    assert_eq!(by_bearer.body["currentUser"]["id"], user.id.as_str());
    assert_eq!(by_bearer.body["currentUser"]["email"], "bearer@test.com");
    assert_eq!(
        by_bearer.body["currentUser"]["id"],
        by_cookie.body["currentUser"]["id"]
    );

    let response = app
        .post(
            "/api/tickets",
            &user.bearer(),
            &json!({"title": "concert", "price": 10}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    assert_eq!(response.body["userId"], user.id.as_str());
}

#[tokio::test]
async fn a_classic_platform_cookie_is_accepted() {
    let app = TestApp::spawn().await;
    // The classic tests sign any id they like; the token is the identity.
    let id = random_id();
    let session = classic_session(&id, "classic@test.com");
    let me = current_user(&app, &Auth::Cookie(session.clone())).await;
    assert_eq!(me.body["currentUser"]["id"], id.as_str());
    assert_eq!(me.body["currentUser"]["email"], "classic@test.com");
    assert!(me.body["currentUser"]["iat"].is_u64(), "{me:?}");

    let response = app
        .post(
            "/api/tickets",
            &Auth::Cookie(session),
            &json!({"title": "concert", "price": 20}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{response:?}");
    assert_eq!(response.body["userId"], id.as_str());
}

/// A token correctly signed with `JWT_KEY`, but with HS512, which the contract refuses.
fn hs512_token(claims: &Value) -> String {
    use base64::Engine;
    use hmac::Mac;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        engine.encode(json!({"alg": "HS512", "typ": "JWT"}).to_string()),
        engine.encode(claims.to_string())
    );
    let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(JWT_KEY.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    let signature = engine.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Sessions that must not be accepted: each leaves `currentUser` null and gets 401 elsewhere.
fn refused_sessions() -> Vec<(&'static str, Auth)> {
    let id = random_id();
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let now = unix_now();
    let claims = json!({"id": id, "email": "forged@test.com", "iat": now});
    let wrong_key = sign_token(&hs256, &claims, Some(b"not-the-jwt-key"));
    let alg_none = sign_token(&json!({"alg": "none", "typ": "JWT"}), &claims, None);
    let hs512 = hs512_token(&claims);
    let expired = sign_token(
        &hs256,
        &json!({"id": id, "email": "old@test.com", "iat": now - 3600, "exp": now - 60}),
        Some(JWT_KEY.as_bytes()),
    );
    let too_old = sign_token(
        &hs256,
        &json!({"id": id, "email": "old@test.com", "iat": now - 3 * 24 * 3600}),
        Some(JWT_KEY.as_bytes()),
    );
    let tampered = {
        let good = sign_token(&hs256, &claims, Some(JWT_KEY.as_bytes()));
        let parts: Vec<&str> = good.split('.').collect();
        let other = sign_token(
            &hs256,
            &json!({"id": random_id(), "email": "evil@test.com", "iat": now}),
            None,
        );
        let other_claims = other.split('.').nth(1).unwrap();
        format!("{}.{}.{}", parts[0], other_claims, parts[2])
    };
    vec![
        ("garbage cookie", Auth::Cookie("garbage".into())),
        ("garbage jwt", Auth::Cookie(session_for_token("not.a.jwt"))),
        ("wrong key", Auth::Cookie(session_for_token(&wrong_key))),
        ("alg none", Auth::Cookie(session_for_token(&alg_none))),
        ("alg HS512", Auth::Cookie(session_for_token(&hs512))),
        ("expired", Auth::Cookie(session_for_token(&expired))),
        (
            "iat beyond session ttl",
            Auth::Cookie(session_for_token(&too_old)),
        ),
        (
            "tampered claims",
            Auth::Cookie(session_for_token(&tampered)),
        ),
        ("garbage bearer", Auth::Bearer("garbage".into())),
        ("wrong-key bearer", Auth::Bearer(wrong_key)),
        ("alg none bearer", Auth::Bearer(alg_none)),
    ]
}

#[tokio::test]
async fn invalid_or_forged_sessions_are_ignored_not_errors() {
    let app = TestApp::spawn().await;
    for (what, auth) in refused_sessions() {
        let response = current_user(&app, &auth).await;
        assert_eq!(
            response.body,
            json!({"currentUser": null}),
            "{what}: {response:?}"
        );
        let response = app
            .post(
                "/api/tickets",
                &auth,
                &json!({"title": "concert", "price": 10}),
            )
            .await;
        response.assert_error(StatusCode::UNAUTHORIZED, "Not authorized");
    }
    assert!(
        app.all_listed_tickets().await.is_empty(),
        "no forged session created a ticket"
    );
}
