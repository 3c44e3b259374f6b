"""Tests for aiflywheel.data.pii: detectors, masking, modes, errors and corpus quality."""

from __future__ import annotations

import importlib.resources
import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiflywheel.data.pii import (
    PII_TYPES,
    PLACEHOLDERS,
    PiiMatch,
    find_pii,
    redact_text,
    scrub,
)
from aiflywheel.errors import RecipeError

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_id(first17: str) -> str:
    """Complete 17 digits into a resident ID with its MOD 11-2 check character."""
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return first17 + "10X98765432"[total % 11]


def luhn(body: str) -> str:
    """Append the Luhn check digit to ``body``."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def found(text: str, types=PII_TYPES) -> list[tuple[str, str]]:
    return [(m.type, m.value) for m in find_pii(text, types)]


ID_A = cn_id("11010519491231002")  # ...002X
ID_B = cn_id("44030519850315261")
ID_C = cn_id("51010720010101001")
CARD_UP19 = luhn("622202123456789012")
CARD_VISA = luhn("455600123456789")


# --------------------------------------------------------------------------- email


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("联系我zhang.san@qq.com谢谢", "zhang.san@qq.com"),
        ("发票请发到邮箱finance.dept@mail.huawei-partner.com.cn，谢谢", None),
        ("退货结果发送至wang_fang+taobao@126.com。", "wang_fang+taobao@126.com"),
        ("Email me at raj.patel1987@outlook.com.", "raj.patel1987@outlook.com"),
        ("Reach us at <help@support.example.org>", "help@support.example.org"),
        ("Customer: MARY_SMITH92@YAHOO.COM (verified)", "MARY_SMITH92@YAHOO.COM"),
        ("mailto:sales@example.co?subject=hi", "sales@example.co"),
        ("家长邮箱：13812345678@139.com", "13812345678@139.com"),
    ],
)
def test_email_positives(text: str, value: str | None) -> None:
    expected = value or "finance.dept@mail.huawei-partner.com.cn"
    assert found(text) == [("email", expected)]


@pytest.mark.parametrize(
    "text",
    [
        "@李雷 @韩梅梅 明天开会",
        "Follow @jane_doe and @acme_support",
        "本地测试用admin@localhost登录",
        "Retina assets: icon@2x.png, banner@3x.jpg",
        "npm i vue@3.4.21 lodash@4.17.21 @types/node@20.11.5",
        "git clone git@github.com:example/shop-backend.git",
        "@media screen and (max-width: 600px) {}",
        "Use root@server1 to deploy",
    ],
)
def test_email_negatives(text: str) -> None:
    assert found(text, ["email"]) == []


def test_userinfo_is_a_secret_not_an_email() -> None:
    text = "see https://admin:s3cret@db.example.com/x"
    assert found(text) == [("url_secret", "admin:s3cret")]
    assert found(text, ["email"]) == []


# --------------------------------------------------------------------------- phone


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("收货人张三，手机13812345678，北京", "13812345678"),
        ("有问题打我电话139-1234-5678", "139-1234-5678"),
        ("备用136 1234 5678，是我爱人", "136 1234 5678"),
        ("联系方式：+86 186 1234 5678（微信同号）", "+86 186 1234 5678"),
        ("新号码0086 17712345678", "0086 17712345678"),
        ("请联系(+86)15912345678确认", "(+86)15912345678"),
        ("门店座机010-62345678，营业时间9:00-21:00", "010-62345678"),
        ("深圳分公司0755-1234567转前台", "0755-1234567"),
        ("售后咨询(021)64123456", "(021)64123456"),
        ("总机021-61234567-8001，分机", "021-61234567-8001"),
        ("Call me at (415) 555-0132 after 5pm.", "(415) 555-0132"),
        ("Customer phone: +1 415-555-0198, prefers SMS.", "+1 415-555-0198"),
        ("Our London office: +44 20 7946 0958", "+44 20 7946 0958"),
        ("Reach support on 1-800-555-0199 (toll free).", "1-800-555-0199"),
        ("Phone 212.555.0147 - ask for Maria", "212.555.0147"),
        ("Tokyo desk: +81 3-1234-5678", "+81 3-1234-5678"),
        ("Contact: +14155550123", "+14155550123"),
        ("Call me: 13800138000", "13800138000"),
    ],
)
def test_phone_positives(text: str, value: str) -> None:
    assert found(text) == [("phone", value)]


@pytest.mark.parametrize(
    "text",
    [
        "订单号202311150012345678，预计明天发货",
        "顺丰单号SF1234567890123，运单YT7512345678901",
        "下单时间2024-01-15 14:32:08，日期20240115",
        "时间戳1705300000123，转换后是2024-01-15",
        "原价¥1,299.00，到手价899元，销量13800+件",
        "会议号：123 456 789，验证码382910",
        "订单号：13812345678 的发票",
        "Order ID 13812345678 has shipped",
        "IMEI: 356938035643809",
        "Product page https://shop.example.com/p/13812345678?variant=blue",
        "Tracking number 1Z999AA10123456784, FedEx 771234567890",
        "Deployed at 2024-01-15T08:30:00+08:00, +0800 zone",
        "ISBN 978-0-13-468599-1, ref 2024-0115-7781",
        "Retry counter hit 2147483647 and 13812345678901 rows",
        "Call +1 for the country code",
    ],
)
def test_phone_negatives(text: str) -> None:
    assert found(text, ["phone"]) == []


def test_phone_inside_longer_numbers_is_not_a_phone() -> None:
    assert found("2024-13812345678-01", ["phone"]) == []
    assert found("id 113812345678", ["phone"]) == []
    assert found("卡号6222 0466 8145 9478 无效", ["phone"]) == []


# --------------------------------------------------------------------------- cn_id


def test_cn_id_positives() -> None:
    assert ID_A.endswith("X")
    assert found(f"实名认证失败，身份证号{ID_A}，姓名王五") == [("cn_id", ID_A)]
    assert found(f"证件号码{ID_A.lower()}（小写x）") == [("cn_id", ID_A.lower())]
    assert found(f"Passenger ID {ID_B}, seat 32A") == [("cn_id", ID_B)]
    assert found(f"Passenger 张伟 ID{ID_C} mobile") == [("cn_id", ID_C)]
    grouped = f"{ID_B[:6]} {ID_B[6:14]} {ID_B[14:]}"
    assert found(f"身份证：{grouped} 已上传") == [("cn_id", grouped)]
    assert found(f'{{"id_card":"{ID_C}"}}') == [("cn_id", ID_C)]


def test_cn_id_negatives() -> None:
    wrong = ID_B[:-1] + ("0" if ID_B[-1] != "0" else "1")
    assert found(f"身份证号填的{wrong}，校验失败", ["cn_id"]) == []
    assert found("这个18位数123456789012345678是测试数据", ["cn_id"]) == []
    bad_date = cn_id("11010519901301002")  # month 13
    assert found(f"ID {bad_date}", ["cn_id"]) == []
    future = cn_id("11010520991231002")
    assert found(f"ID {future}", ["cn_id"]) == []
    bad_province = cn_id("99010519491231002")
    assert found(f"ID {bad_province}", ["cn_id"]) == []
    assert found("营业执照91310000MA1FL1234X", ["cn_id"]) == []


def test_legacy_15_digit_id_needs_context() -> None:
    legacy = "110105491231002"
    assert found(f"老人的身份证号{legacy}还能用吗") == [("cn_id", legacy)]
    assert found(f"号码{legacy}，身份证过期了") == [("cn_id", legacy)]
    assert found(f"Legacy ID card no. {legacy}") == [("cn_id", legacy)]
    assert found(f"流水{legacy}已入账", ["cn_id"]) == []
    assert found("ID card 110105491331002", ["cn_id"]) == []  # month 13


def test_valid_id_that_passes_luhn_is_an_id_not_a_card() -> None:
    for n in range(1000):
        candidate = cn_id(f"110105198001{n % 28 + 1:02d}{n % 1000:03d}"[:17])
        if candidate[-1] != "X" and luhn(candidate[:-1]) == candidate:
            break
    else:  # pragma: no cover - the loop always finds one
        pytest.fail("no ID passing Luhn found")
    assert found(f"身份证{candidate}") == [("cn_id", candidate)]
    assert found(f"身份证{candidate}", ["bank_card"]) == []


# --------------------------------------------------------------------------- bank_card


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (f"退款打到我的卡上：{CARD_UP19}（工商银行）", CARD_UP19),
        ("信用卡4111-1111-1111-1111绑定失败", "4111-1111-1111-1111"),
        ("Test payment with 4111 1111 1111 1111 succeeded", "4111 1111 1111 1111"),
        ("Stripe test card 5555555555554444 works", "5555555555554444"),
        ("Amex 3782 822463 10005 expired", "3782 822463 10005"),
        ("Amex test number 378282246310005", "378282246310005"),
        (f"Refund to card {CARD_VISA}.", CARD_VISA),
    ],
)
def test_bank_card_positives(text: str, value: str) -> None:
    assert found(text) == [("bank_card", value)]


def test_bank_card_19_digit_grouped() -> None:
    grouped = " ".join([CARD_UP19[i : i + 4] for i in range(0, 19, 4)])
    assert found(f"打款账号：{grouped}（中国银行）") == [("bank_card", grouped)]


@pytest.mark.parametrize(
    "text",
    [
        "会员卡号 6222 0000 1111 2222 显示无效",  # fails Luhn
        "Card number 4000 1234 5678 9010 was rejected",  # fails Luhn
        f"订单号 {CARD_VISA} 的发票",  # Luhn-valid, but an order number
        f"Serial number {CARD_VISA} on the router",
        "商品条码6901234567892，保质期12个月",  # EAN-13, Luhn-valid by chance
        "6901234567892 这个码扫不出来",
        "IMEI 356938035643809 reported stolen",
        "F(91) = 4660046610375530309 according to the script",
        "Timestamp 1705312800000 and 2^64 = 18446744073709551616",
        "订单号202311150012345678，支付宝交易号2024011522001412345678901234",
        "卡号**** **** **** 1234，尾号1234",
    ],
)
def test_bank_card_negatives(text: str) -> None:
    assert found(text, ["bank_card"]) == []


# --------------------------------------------------------------------------- ip


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("服务器IP是192.168.1.100，端口8080", "192.168.1.100"),
        ("内网地址10.10.1.23:6379连接超时", "10.10.1.23"),
        ("WARN login failed from 203.0.113.45 user=x", "203.0.113.45"),
        ("curl http://192.168.0.1/admin", "192.168.0.1"),
        ("防火墙放行10.0.0.0/8网段", "10.0.0.0"),
        ("监听地址[::1]:8080", "::1"),
        ("client 2001:db8:85a3::8a2e:370:7334 connected", "2001:db8:85a3::8a2e:370:7334"),
        ("Full 2001:0db8:0000:0000:0000:ff00:0042:8329 form", None),
        ("Mapped ::ffff:192.0.2.128 seen", "::ffff:192.0.2.128"),
        ("The IPv6 gateway is fe80::1%eth0", "fe80::1"),
        ("IPv6地址240e:3b4:38e4:1d0::2，电信", "240e:3b4:38e4:1d0::2"),
    ],
)
def test_ip_positives(text: str, value: str | None) -> None:
    expected = value or "2001:0db8:0000:0000:0000:ff00:0042:8329"
    assert found(text) == [("ip", expected)]


@pytest.mark.parametrize(
    "text",
    [
        "Updated to version 1.2.3.4 and the crash is gone",
        "Running v1.2.3.4 on staging",
        "版本号1.2.3.4.5的补丁已经发布",
        "2024.01.15到2024.02.15活动期间全场8.8折",
        "当前固件版本：2.1.0.15，请升级到最新版本2.1.1.3",
        "系统升级至4.2.0.1版本后打印机不兼容",
        "GPU驱动537.58，CUDA 12.2，cuDNN 8.9.4.25",
        "Chrome/120.0.0.0 Safari/537.36",
        "Section 4.2.1.3 describes the retry policy",
        "SNMP OID 1.3.6.1.4.1.311.21.7",
        "changelog https://example.com/changelog?v=2.0.0.1",
        "octets 256.1.1.1 and 01.02.03.04 are invalid",
        "MAC 00:1A:2B:3C:4D:5E, time 10:23:45, std::vector, Foo::Bar, 0xdead::beef",
    ],
)
def test_ip_negatives(text: str) -> None:
    assert found(text, ["ip"]) == []


def test_ip_keyword_wins_over_nearby_version_words() -> None:
    assert found("driver 537.58 installed, server 10.0.0.5 unreachable", ["ip"]) == [
        ("ip", "10.0.0.5")
    ]


# --------------------------------------------------------------------------- url_secret


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("GET /api/v1/users?access_token=abcDEF123456 HTTP/1.1", ["abcDEF123456"]),
        ("链接https://h5.example.cn/invite?token=Zx81Qw0pLm，有效期24小时", ["Zx81Qw0pLm"]),
        ("https://x.cn/geo?address=北京&key=0123456789abcdef", ["0123456789abcdef"]),
        ("mysql://root:Passw0rd!23@db.local:3306/shop", ["root:Passw0rd!23"]),
        ("redis://:hunter22@cache.local:6379/0", ["hunter22"]),
        ("https://example.com/cb#access_token=SlAV32hkKG&token_type=Bearer", ["SlAV32hkKG"]),
        ("https://s3.example.com/a.pdf?X-Amz-Signature=9f86d081884c", ["9f86d081884c"]),
        ("https://shop.example.com/cart;jsessionid=A1B2C3D4E5F6?item=3", ["A1B2C3D4E5F6"]),
        ("https://pay.example.com/notify?order_id=1&sign=d41d8cd98f00", ["d41d8cd98f00"]),
        ("Click [here](https://app.example.com/v?token=abc123xyz) now.", ["abc123xyz"]),
        ("https://a.example.com/x?API_KEY=Q1w2E3r4&Secret=zzTop999.", ["Q1w2E3r4", "zzTop999"]),
        ("https://api.example.com/cb?code=4/0AX4XfWh&state=xyz", ["4/0AX4XfWh"]),
        ("OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx", ["sk-proj-abcdefghijklmnopqrstuvwx"]),
        ("Authorization: Bearer abcdefghijklmnop1234", ["abcdefghijklmnop1234"]),
        ("AWS key AKIAZ7QW3ERT5YU2IO4P committed", ["AKIAZ7QW3ERT5YU2IO4P"]),
    ],
)
def test_url_secret_positives(text: str, values: list[str]) -> None:
    assert found(text, ["url_secret"]) == [("url_secret", v) for v in values]


@pytest.mark.parametrize(
    "text",
    [
        "https://help.example.com/faq?category=payment&page=2",
        "https://m.example.com/promo?utm_source=wechat&utm_campaign=1111",
        "https://shop.example.com/cart?promo_code=SAVE20&country_code=CN&sort_key=price",
        "https://www.example.com/search?q=password+reset&page=2",
        "https://api.example.com/v1/items?api_key=YOUR_API_KEY&limit=10",
        "curl https://api.example.com/v1/me?token=${TOKEN}",
        "https://api.example.com/x?token=<TOKEN>&key=xxx&sig=***",
        "GET /api/cart?token=undefined&auth=1",
        "postgres://user:password@localhost:5432/mydb",
        "postgres://localhost:5432/shop, ftp://ftp.example.org/pub/",
        "https://example.com/oauth/authorize?response_type=code&client_id=abc123",
        "the token?token=abc123 is not in a URL",
        "Set password=hunter2 in config.ini",
    ],
)
def test_url_secret_negatives(text: str) -> None:
    assert found(text, ["url_secret"]) == []


# --------------------------------------------------------------------------- engine


def test_matches_are_sorted_non_overlapping_and_at_their_spans() -> None:
    text = (
        f"新员工李雷，手机13698765432，邮箱lilei@corp.example.cn，工资卡{CARD_UP19}，"
        f"身份证{ID_A}，登录IP 183.14.25.67，链接https://x.cn/a?token=abcd1234"
    )
    matches = find_pii(text)
    assert [m.type for m in matches] == [
        "phone",
        "email",
        "bank_card",
        "cn_id",
        "ip",
        "url_secret",
    ]
    for m in matches:
        assert text[m.start : m.end] == m.value
    for a, b in zip(matches, matches[1:], strict=False):
        assert a.end <= b.start


def test_overlaps_resolve_by_priority() -> None:
    # The phone digits inside an e-mail address belong to the e-mail.
    assert found("18888888888@163.com") == [("email", "18888888888@163.com")]
    # ...but asked for phones only, the digits are a phone.
    assert found("18888888888@163.com", ["phone"]) == [("phone", "18888888888")]
    # A phone number inside a secret value is part of the secret.
    assert found("https://x.cn/a?token=13812345678abc") == [("url_secret", "13812345678abc")]
    # The longest candidate of one type wins: +86 prefix included.
    assert found("+86 13812345678") == [("phone", "+86 13812345678")]


def test_adjacent_matches_are_all_found() -> None:
    text = "13312345678/13412345678,a@b.cn;10.0.0.1"
    assert found(text) == [
        ("phone", "13312345678"),
        ("phone", "13412345678"),
        ("email", "a@b.cn"),
        ("ip", "10.0.0.1"),
    ]
    assert redact_text(text, find_pii(text), "redact") == "<PHONE>/<PHONE>,<EMAIL>;<IP>"


def test_types_filter_and_single_string() -> None:
    text = "邮箱a@b.cn 手机13812345678"
    assert found(text, ["phone"]) == [("phone", "13812345678")]
    assert found(text, "email") == [("email", "a@b.cn")]
    assert found(text, []) == []
    assert find_pii("") == []


def test_unknown_type_raises_recipe_error() -> None:
    with pytest.raises(
        RecipeError, match=r"one of email, phone, cn_id, bank_card, ip, url_secret, got 'passport'"
    ):
        find_pii("x", ["email", "passport"])
    with pytest.raises(RecipeError, match="'ssn'"):
        scrub("x", types=["ssn"])
    with pytest.raises(RecipeError, match="'ssn'"):
        scrub("x", mode="off", types=["ssn"])


# --------------------------------------------------------------------------- redaction


def test_redact_uses_typed_placeholders() -> None:
    text = f"手机13812345678 邮箱zhang@qq.com 身份证{ID_A} 卡{CARD_VISA} IP 10.1.2.3"
    out, matches = scrub(text)
    assert out == "手机<PHONE> 邮箱<EMAIL> 身份证<CN_ID> 卡<BANK_CARD> IP <IP>"
    assert len(matches) == 5
    out, _ = scrub("https://x.cn/a?token=abcd1234&page=2")
    assert out == "https://x.cn/a?token=<SECRET>&page=2"
    assert set(PLACEHOLDERS) == set(PII_TYPES)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("13812345678", "138****5678"),
        ("138-1234-5678", "138-****-5678"),
        ("+86 13812345678", "+86 138****5678"),
        ("010-62345678", "010-****5678"),
        ("(415) 555-0132", "(415) ***-0132"),
        ("+1 415-555-0198", "+1 415-***-0198"),
        ("zhang.san@qq.com", "z***@qq.com"),
        (ID_A, ID_A[:6] + "********" + ID_A[-4:]),
        ("4111111111111111", "************1111"),
        ("4111 1111 1111 1111", "**** **** **** 1111"),
        ("192.168.1.100", "192.168.*.*"),
        ("2001:db8::1", "2001:db8:*:*:*:*:*:*"),
        ("https://x.cn/a?token=abcd1234", "https://x.cn/a?token=****"),
        ("mysql://root:pw1234@db/x", "mysql://****@db/x"),
    ],
)
def test_mask(text: str, masked: str) -> None:
    out, matches = scrub(text, mode="mask")
    assert matches, text
    assert out == masked


def test_modes_off_and_drop_row() -> None:
    text = "手机13812345678"
    assert scrub(text, mode="off") == (text, [])
    out, matches = scrub(text, mode="drop_row")
    assert out == text
    assert matches == [PiiMatch("phone", 2, 13, "13812345678")]
    assert scrub("no pii here", mode="redact") == ("no pii here", [])


def test_bad_modes_raise_recipe_error() -> None:
    with pytest.raises(RecipeError, match=r"one of redact, mask, off, drop_row, got 'hash'"):
        scrub("x", mode="hash")
    with pytest.raises(RecipeError, match=r"one of redact, mask, got 'off'"):
        redact_text("x", [], "off")


def test_redact_text_rejects_foreign_or_overlapping_matches() -> None:
    text = "手机13812345678"
    with pytest.raises(ValueError, match="does not lie"):
        redact_text(text, [PiiMatch("phone", 0, 11, "13812345678")], "redact")
    overlapping = [PiiMatch("phone", 2, 13, "13812345678"), PiiMatch("phone", 5, 13, "2345678")]
    with pytest.raises(ValueError, match="overlap"):
        redact_text(text, overlapping, "redact")
    with pytest.raises(RecipeError, match="'ssn'"):
        redact_text(text, [PiiMatch("ssn", 2, 13, "13812345678")], "redact")
    # Unsorted input is fine.
    matches = list(reversed(find_pii("a@b.cn 13812345678")))
    assert redact_text("a@b.cn 13812345678", matches, "redact") == "<EMAIL> <PHONE>"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from(list("0123456789 -.:@/?=&+()abcxX中文，。") + ["https://", "token="]),
        max_size=60,
    ).map("".join)
)
def test_find_pii_invariants_on_arbitrary_text(text: str) -> None:
    matches = find_pii(text)
    for m in matches:
        assert m.type in PII_TYPES
        assert text[m.start : m.end] == m.value
    for a, b in zip(matches, matches[1:], strict=False):
        assert a.end <= b.start
    for mode in ("redact", "mask"):
        scrub(text, mode=mode)


# --------------------------------------------------------------------------- corpus


def _corpus() -> list[dict]:
    resource = importlib.resources.files("aiflywheel.data") / "pii_corpus.jsonl"
    return [json.loads(line) for line in resource.read_text(encoding="utf-8").splitlines()]


def test_corpus_is_consistent() -> None:
    rows = _corpus()
    assert len(rows) >= 260
    assert len({row["id"] for row in rows}) == len(rows)
    langs = Counter(row["lang"] for row in rows)
    assert set(langs) <= {"zh", "en", "mixed"}
    assert langs["zh"] >= len(rows) * 0.4 and langs["en"] >= len(rows) * 0.4
    per_type: Counter = Counter()
    for row in rows:
        assert set(row) == {"id", "lang", "text", "entities"}
        for entity in row["entities"]:
            assert entity["type"] in PII_TYPES, row["id"]
            assert entity["value"] in row["text"], (row["id"], entity["value"])
            per_type[entity["type"]] += 1
    assert all(per_type[kind] >= 25 for kind in PII_TYPES), per_type
    assert sum(1 for row in rows if not row["entities"]) >= 80


def test_quality_on_corpus() -> None:
    tp: Counter = Counter()
    fp: Counter = Counter()
    fn: Counter = Counter()
    for row in _corpus():
        gold = Counter((e["type"], e["value"]) for e in row["entities"])
        got = Counter((m.type, m.value) for m in find_pii(row["text"]))
        for (kind, _), n in (gold & got).items():
            tp[kind] += n
        for (kind, _), n in (got - gold).items():
            fp[kind] += n
        for (kind, _), n in (gold - got).items():
            fn[kind] += n
    for kind in PII_TYPES:
        precision = tp[kind] / max(1, tp[kind] + fp[kind])
        recall = tp[kind] / max(1, tp[kind] + fn[kind])
        assert precision >= 0.95, (kind, precision)
        assert recall >= 0.95, (kind, recall)


# ---------------------------------------------------------------- normalized before detection

HIDDEN = [
    ("电话138\u200e1234\u200e5678", "138\u200e1234\u200e5678", "phone"),
    ("电话\u202e138\u202d1234\u202c5678", "138\u202d1234\u202c5678", "phone"),
    ("call 138\u20661234\u20695678 now", "138\u20661234\u20695678", "phone"),
    ("tel\u200b13812345678", "13812345678", "phone"),
    ("号码138\U000e00311234\U000e007f5678", "138\U000e00311234\U000e007f5678", "phone"),
    ("手机１３８１２３４５６７８", "１３８１２３４５６７８", "phone"),
    ("手机\ufeff138 1234 5678", "138 1234 5678", "phone"),
    ("mail zhang\u200b.san@qq\u200e.com ok", "zhang\u200b.san@qq\u200e.com", "email"),
    ("mail ｚｈａｎｇ＠ｑｑ．ｃｏｍ", "ｚｈａｎｇ＠ｑｑ．ｃｏｍ", "email"),
    ("身份证4403\u200d0519880512\u200c3451", "4403\u200d0519880512\u200c3451", "cn_id"),
]


@pytest.mark.parametrize(("text", "value", "kind"), HIDDEN)
def test_format_characters_and_full_width_forms_do_not_hide_pii(
    text: str, value: str, kind: str
) -> None:
    assert [(m.type, m.value) for m in find_pii(text)] == [(kind, value)]
    redacted, _ = scrub(text)
    assert value not in redacted and PLACEHOLDERS[kind] in redacted


def test_every_format_character_is_dropped_before_detection() -> None:
    """Every Unicode Cf character (and the whole tag block) is invisible to the detectors."""
    import sys
    import unicodedata

    format_chars = [
        chr(cp)
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) == "Cf" or 0xE0000 <= cp <= 0xE007F
    ]
    missed = [f"U+{ord(ch):04X}" for ch in format_chars if not find_pii(f"138{ch}12345678")]
    assert missed == []


@pytest.mark.parametrize(
    "value",
    [
        "138.1234.5678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "+86-138-1234-5678",
        "+86.138.1234.5678",
        "(+86) 138.1234.5678",
        "0086 138.1234.5678",
    ],
)
def test_dotted_spaced_and_dashed_mobiles(value: str) -> None:
    assert [(m.type, m.value) for m in find_pii(f"电话 {value}，谢谢")] == [("phone", value)]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("4111.1111.1111.1111", "bank_card"),
        ("6222 0212 3456 7890 128", "bank_card"),
        ("440305-19880512-3451", "cn_id"),
        ("440305 19880512 3451", "cn_id"),
    ],
)
def test_grouped_cards_and_ids(value: str, kind: str) -> None:
    found = find_pii(f"number {value} thanks")
    assert [(m.type, m.value) for m in found] == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "订单号138.1234.5678已发货",
        "build 138.1234.5678.9",
        "version 1.2.3.4 released",
        "ratio 1.3812345678",
        "URL：/api/v2/orders?page=1，要脱敏",
        "4111.1111.1111.1112",  # Luhn fails
        "440305-19880512-3452",  # checksum fails
    ],
)
def test_no_false_positives_on_dotted_numbers(text: str) -> None:
    assert find_pii(text) == []
