"""Signing in and out, sessions, and the sign-in rate limit."""

from __future__ import annotations

from app.accounts.tables import User
from tests.factories import csrf_headers, sign_in

INDEX = "/employee/admin/integrations"


async def test_right_password_signs_in_with_an_httponly_samesite_session(client, factory):
    person = await factory.user()
    response = await sign_in(client, person)
    assert response.status_code == 302
    assert response.headers["location"] == INDEX
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("intime_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    page = await client.get(INDEX)
    assert page.status_code == 200
    assert person.org.name in page.text and person.user.email in page.text
    assert (await User.objects().get(User.id == person.user.id)).last_login_at is not None


async def test_wrong_password_shows_one_message_that_does_not_reveal_the_account(client, factory):
    person = await factory.user()
    wrong = await sign_in(client, person, password="not-the-password")
    assert wrong.status_code == 400
    assert "The e-mail or password is not right." in wrong.text
    client.cookies.clear()
    await client.get("/login")
    unknown = await client.post(
        "/login",
        data={
            "email": "nobody@example.test",
            "password": "whatever-pass",
            "_csrf_token": client.cookies.get("intime_csrf"),
        },
    )
    assert unknown.status_code == 400
    assert "The e-mail or password is not right." in unknown.text
    assert (await client.get(INDEX, follow_redirects=False)).status_code == 302


async def test_eleventh_attempt_is_refused_even_with_the_right_password(client, factory):
    person = await factory.user()
    for _ in range(10):
        assert (await sign_in(client, person, password="wrong-password")).status_code == 400
    blocked = await sign_in(client, person)
    assert blocked.status_code == 429
    assert "Too many failed sign-in attempts" in blocked.text
    assert int(blocked.headers["retry-after"]) > 0
    assert (await client.get(INDEX, follow_redirects=False)).status_code == 302


async def test_one_address_guessing_across_accounts_is_limited_too(client, factory):
    people = [await factory.user() for _ in range(10)]
    for person in people:
        assert (await sign_in(client, person, password="wrong-password")).status_code == 400
    fresh = await factory.user()
    assert (await sign_in(client, fresh)).status_code == 429


async def test_success_clears_the_account_counter(client, factory):
    person = await factory.user()
    for _ in range(5):
        await sign_in(client, person, password="wrong-password")
    assert (await sign_in(client, person)).status_code == 302
    # After a success the account may fail again without being locked at once
    for _ in range(4):
        assert (await sign_in(client, person, password="wrong-password")).status_code == 400


async def test_sign_out_ends_the_session_for_good(client, factory):
    person = await factory.user()
    await sign_in(client, person)
    old_session = client.cookies.get("intime_session")
    response = await client.post("/logout", headers=csrf_headers(client), follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == "/login"
    client.cookies.clear()
    client.cookies.set("intime_session", old_session)
    assert (await client.get(INDEX, follow_redirects=False)).status_code == 302


async def test_each_sign_in_gets_a_new_session_id(client, factory):
    person = await factory.user()
    await sign_in(client, person)
    first = client.cookies.get("intime_session")
    await sign_in(client, person)
    assert client.cookies.get("intime_session") != first


async def test_deactivated_user_is_signed_out_at_the_next_request(client, factory):
    person = await factory.user()
    await sign_in(client, person)
    await User.update({User.is_active: False}).where(User.id == person.user.id)
    assert (await client.get(INDEX, follow_redirects=False)).status_code == 302


async def test_pages_need_a_session_and_come_back_after_sign_in(client, factory):
    person = await factory.user()
    tokens_page = INDEX + "/api-tokens"
    response = await client.get(tokens_page, follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == f"/login?next={tokens_page}"
    signed = await sign_in(client, person, next_path=tokens_page)
    assert signed.headers["location"] == tokens_page


async def test_htmx_request_without_session_is_sent_to_sign_in(client):
    response = await client.get(INDEX + "/partials/recent-events", headers={"HX-Request": "true"})
    assert response.headers["hx-redirect"].startswith("/login")


async def test_next_parameter_cannot_send_people_to_another_site(client, factory):
    person = await factory.user()
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = await sign_in(client, person, next_path=evil)
        assert response.headers["location"] == INDEX
