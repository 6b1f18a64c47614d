"""The MATH² review page: decisions persist in SQLite, output is escaped, the help button asks
the model; in headless Chromium (Selenium) when Chromium and chromedriver are installed."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from fastapi.testclient import TestClient

from browser_utils import headless_chromium

from reasonlab.skills.review import ReviewStore, create_app

XSS = "<script>window.__xss = 1</script>How many <b>apples</b>?"


def _items():
    return [
        {"id": "q0000", "skills": ["add", "mul"], "question": "Ann has 3 apples and gets 4 more. "
         "She packs them 2 to a bag... How many apples?", "solution": "3 + 4 = 7", "stated_answer": 7,
         "attempt": {"solution": "7", "flaws": "none", "answer": "7", "flawed": False},
         "rubric_votes": [True, True, False], "final_answers": ["14", "14", "13"],
         "final_answer": "14", "agreement": 2 / 3},
        {"id": "q0001", "skills": ["sub", "div"], "question": XSS, "solution": "<i>x</i>",
         "final_answer": "3"},
    ]


@pytest.fixture()
def store(tmp_path):
    s = ReviewStore(tmp_path / "review.sqlite")
    assert s.load(_items()) == 2
    assert s.load(_items()) == 0  # loading the queue again adds nothing
    yield s
    s.close()


def test_decisions_are_saved_at_once_and_survive_a_reopen(store, tmp_path):
    c = TestClient(create_app(store))
    r = c.post("/item/q0000/decide", data={"question": "Edited question?", "note": "ok",
                                            "action": "accepted"}, follow_redirects=False)
    assert r.status_code == 303
    reopened = ReviewStore(tmp_path / "review.sqlite")  # another connection sees it committed
    it = reopened.item("q0000")["review"]
    assert (it["status"], it["question"], it["note"]) == ("accepted", "Edited question?", "ok")
    rows = {r["id"]: r for r in reopened.export()}
    assert rows["q0000"]["question"] == "Edited question?"
    assert rows["q0000"]["original_question"].startswith("Ann has 3 apples")
    assert rows["q0001"]["status"] == "pending"
    assert c.post("/item/q0000/decide", data={"action": "maybe"}).status_code == 400
    assert c.get("/item/nope").status_code == 404
    assert '"status": "accepted"' in c.get("/export.jsonl").text


def test_everything_shown_is_escaped(store):
    c = TestClient(create_app(store))
    page = c.get("/item/q0001").text
    assert "<script>window" not in page and "<b>apples" not in page and "<i>x" not in page
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in page
    assert "&lt;script&gt;" in c.get("/").text


def test_help_button_asks_the_model(store):
    from reasonlab.skills.oracle import default_data_config, make_oracle

    cfg = default_data_config(n_train=20, n_val=0, n_test=5, n_test_template=0, n_test_pair=0)
    oracle = make_oracle(0.0, data_cfg=cfg)
    p = next(iter(oracle.world.values()))
    q = next(k for k, v in oracle.world.items() if v is p)
    store.load([{"id": "known", "skills": p.skills, "question": q, "final_answer": p.answer}])
    c = TestClient(create_app(store, oracle))
    page = c.post("/item/known/help").text
    assert f"Answer: {p.answer}" in page
    c.post("/item/known/decide", data={"question": "Something else entirely?", "action": "pending"})
    assert "Answer: none" in c.post("/item/known/help").text  # it asks about the edited question
    assert len(store.item("known")["review"]["help"]) == 2


def _browser():
    return headless_chromium("the review page's browser test")


def test_review_page_in_headless_chromium(store):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port,
                                           log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.02)
    driver = _browser()
    try:
        from selenium.webdriver.common.by import By

        base = f"http://127.0.0.1:{port}"
        driver.get(f"{base}/item/q0000")
        assert driver.find_element(By.ID, "status").text == "pending"
        box = driver.find_element(By.ID, "edit")
        box.clear()
        box.send_keys("How many apples does Ann have in the end?")
        driver.find_element(By.ID, "accept").click()
        driver.refresh()
        assert driver.find_element(By.ID, "status").text == "accepted"
        assert driver.find_element(By.ID, "question").text == "How many apples does Ann have in the end?"
        assert store.item("q0000")["review"]["status"] == "accepted"
        driver.get(f"{base}/item/q0001")
        assert driver.find_element(By.ID, "question").text == XSS  # shown as text
        assert driver.execute_script("return window.__xss === undefined")  # never ran
        assert not driver.find_elements(By.CSS_SELECTOR, "#question b")
    finally:
        driver.quit()
        server.should_exit = True
        th.join(timeout=10)
