"""What the answer policy does with a message before retrieval: small talk, messages with
nothing to answer, third languages, an injection wrapped around a real question, and
follow-ups rewritten into standalone questions.

All rule based and deterministic, zh and en (text normalized with NFKC and lower case
first, like ``intents``):

- ``small_talk``: a greeting, thanks, goodbye or "are you a bot?" and nothing else gets a
  short polite reply in the user's language (the policy's ``small_talk`` reply kind: not a
  handoff, so no ticket).
- ``nothing_to_answer``: a message with no letters (only emoji or punctuation) or only
  personal data (a phone number, an e-mail address) asks the user for the question.
- ``third_language``: Japanese (kana) or Korean (hangul) messages; the policy hands them
  off, since the help center is in Chinese and English.
- ``question_after_injection``: the part of a message that is a real question once the
  sentences that try to override the instructions are removed (``None`` when nothing but
  the injection is left).
- ``standalone_question``: a follow-up ("新疆也可以吗？", "how much does that cost?", "那
  Hong Kong 呢") put after the previous user message, so retrieval and the answer keep the
  conversation's topic; a message that already stands on its own is left as it is.
- ``trim_history``: the most recent turns that fit in a character budget.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

_SPACE = re.compile(r"\s+")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d\s()-]{6,}\d")
_PUNCT = re.compile(r"[\s\W_]+")

_GREETING_EN = (
    r"(?:hi|hello|hey|hiya|howdy|yo|good\s+(?:morning|afternoon|evening|day)|greetings|"
    r"hi\s+there|hello\s+there|hey\s+there)"
)
_THANKS_EN = (
    r"(?:thanks?(?:\s+you)?(?:\s+(?:so|very)\s+much)?(?:\s+a\s+lot)?|thx|ty|cheers|"
    r"much\s+appreciated|(?:that'?s|that\s+is)\s+(?:great|helpful|perfect)|great|perfect|"
    r"awesome|got\s+it|ok(?:ay)?)"
)
_BYE_EN = r"(?:bye|goodbye|see\s+you|see\s+ya|have\s+a\s+(?:nice|good)\s+day)"
_BOT_EN = (
    r"(?:are|r)\s+(?:you|u)\s+(?:a\s+|an\s+)?(?:bot|robot|chatbot|ai|machine|computer|"
    r"real|human|person)(?:\s+or\s+(?:a\s+)?(?:bot|robot|human|person|real))?"
    r"|(?:who|what)\s+(?:are|r)\s+(?:you|u)"
    r"|how\s+are\s+(?:you|u)(?:\s+doing)?(?:\s+today)?"
)
_FILLER_EN = (
    r"(?:(?:and\s+)?(?:please|pls|so|then|again|guys|everyone|all|friend|mate|:\)|:-\))\s*)*"
)
_SMALL_EN = {
    "greeting": re.compile(rf"^(?:{_GREETING_EN}\s*)+{_FILLER_EN}$"),
    "thanks": re.compile(rf"^(?:(?:ok(?:ay)?|great|perfect)\s+)?(?:{_THANKS_EN}\s*)+{_FILLER_EN}$"),
    "bye": re.compile(rf"^(?:(?:ok(?:ay)?|thanks?)\s+)?(?:{_BYE_EN}\s*)+{_FILLER_EN}$"),
    "bot": re.compile(rf"^(?:(?:{_GREETING_EN})\s+)?(?:{_BOT_EN}){_FILLER_EN}$"),
}
_SMALL_ZH = {
    "greeting": re.compile(
        r"^(?:你好|您好|你们好|大家好|嗨|哈喽|哈啰|早上好|上午好|下午好|晚上好|早安|晚安|在吗|在不在|"
        r"hello|hi)+(?:呀|啊|哦|哇|呢|吗|~)*$"
    ),
    "thanks": re.compile(
        r"^(?:好的|好|嗯|ok|知道了|明白了|懂了)?(?:谢谢|多谢|感谢|谢啦|谢了|辛苦了|thanks|thankyou)"
        r"(?:你|您|你们|客服)?(?:了|啦|呀|啊|哦)*$"
        r"|^(?:好的|好|嗯|ok|知道了|明白了|懂了|收到|没问题)+(?:了|啦|呀|啊|哦)*$"
    ),
    "bye": re.compile(r"^(?:好的|谢谢)?(?:再见|拜拜|拜|bye|回头见)(?:了|啦|呀|啊|哦)*$"),
    "bot": re.compile(
        r"^(?:你好|您好)?(?:你|您)是(?:不是)?(?:机器人|人工智能|ai|真人|人|谁|什么)(?:吗|么|嘛|呢|啊|呀)?"
        r"(?:还是(?:真人|人|机器人))?(?:吗|么|嘛|呢|啊|呀)*$"
        r"|^(?:你好|您好)?(?:你|您)(?:好吗|怎么样)$"
    ),
}
SMALL_TALK_TEXT = {
    ("greeting", "zh"): "您好！我是智能客服助手，可以回答配送、退换货、支付、账户和会员等问题。"
    "请问有什么可以帮您？",
    ("greeting", "en"): "Hello! I'm the help-center assistant. I can answer questions about "
    "shipping, returns, payments, accounts and membership. What can I help you with?",
    ("thanks", "zh"): "不客气！还有其他问题随时问我。",
    ("thanks", "en"): "You're welcome! Ask me anytime if there's anything else.",
    ("bye", "zh"): "再见，祝您购物愉快！",
    ("bye", "en"): "Goodbye, and happy shopping!",
    (
        "bot",
        "zh",
    ): "我是智能客服助手（不是真人），根据帮助中心的内容回答问题；需要人工客服时请说“转人工”。"
    "请问有什么可以帮您？",
    ("bot", "en"): "I'm an automated assistant (not a person) answering from our help center; "
    'say "talk to a person" whenever you want a member of our team. What can I help you with?',
}
NOTHING_TO_ANSWER_TEXT = {
    "empty": {
        "zh": "我没有看到具体的问题。请用文字描述您想了解的内容，例如“退货运费谁出？”。",
        "en": "I couldn't find a question in your message. Please describe what you'd like to "
        'know in words, for example "Who pays for return shipping?".',
    },
    "pii": {
        "zh": "为了保护您的隐私，请不要只发送手机号、邮箱等个人信息。请告诉我您想咨询的问题。",
        "en": "To protect your privacy, please don't send only personal details such as a "
        "phone number or e-mail address. What would you like to ask?",
    },
}


def normalized(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return text.replace("’", "'").replace("‘", "'")


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^\w':)-]+", " ", normalized(text)).split())


def small_talk(text: str) -> str | None:
    """``greeting`` | ``thanks`` | ``bye`` | ``bot`` when the whole message is small talk,
    else ``None``."""
    words = _words(text).replace(" - ", " ")
    compact = _PUNCT.sub("", normalized(text))
    if not compact:
        return None
    for name, pattern in _SMALL_ZH.items():
        if pattern.match(compact):
            return name
    for name, pattern in _SMALL_EN.items():
        if pattern.match(words):
            return name
    return None


def small_talk_reply(kind: str, language: str) -> str:
    return SMALL_TALK_TEXT[(kind, "zh" if language == "zh" else "en")]


def nothing_to_answer(text: str) -> str | None:
    """``empty`` when the message has no letter or digit (only emoji, symbols,
    punctuation), ``pii`` when it is only phone numbers and e-mail addresses (with a few
    filler words at most), else ``None``."""
    norm = normalized(text)
    if not any(ch.isalnum() for ch in norm):
        return "empty"
    rest = _PHONE.sub(" ", _EMAIL.sub(" ", norm))
    if rest != norm:
        leftover = re.sub(
            r"\b(?:my|phone|number|email|e-mail|mail|is|tel|mobile|contact|and|me|at|:)\b"
            r"|我的|手机号?码?|电话|邮箱|号码|是|联系方式|[:：,，。.!！]",
            " ",
            rest,
        )
        if not any(ch.isalnum() for ch in leftover):
            return "pii"
    return None


def third_language(text: str) -> str | None:
    """``ja`` for Japanese (kana), ``ko`` for Korean (hangul), else ``None``."""
    if _KANA.search(text):
        return "ja"
    if _HANGUL.search(text):
        return "ko"
    return None


_SENTENCE = re.compile(r"[^。！？!?\n.;；]+[。！？!?\n.;；]*")


def question_after_injection(text: str, is_injection: Callable[[str], str | None]) -> str | None:
    """The sentences of ``text`` that ``is_injection`` does not flag, when they still ask
    something (at least two letters or Chinese characters, not only small talk); ``None``
    when nothing but the injection is left."""
    kept = [s.strip() for s in _SENTENCE.findall(text) if s.strip()]
    clean = [s for s in kept if is_injection(s) is None]
    if len(clean) == len(kept):
        return None
    rest = " ".join(clean).strip()
    letters = sum(1 for ch in rest if ch.isalpha())
    if letters < 4 or small_talk(rest) is not None or nothing_to_answer(rest) is not None:
        return None
    return rest


# A follow-up leans on the conversation: it refers back ("that", "它", "也") or is a
# fragment ("and to Taiwan?", "那香港呢").
_FOLLOW_EN = re.compile(
    r"^(?:and|also|but|so|then|what\s+about|how\s+about|what\s+if|same\s+for|and\s+for|"
    r"or|ok(?:ay)?\s+and|what\s+else)\b"
    r"|\b(?:it|that|this|these|those|them|there|one|same|either|too|also|instead)\b"
)
_FOLLOW_ZH = re.compile(
    r"也|呢[?？]?$|^那|^还有|^如果|这个|那个|这样|那样|它|同样|一样|还能|还可以|^再"
)
# A message this short is a fragment that leans on the conversation ("order page?").
SHORT_CHARS = 12
_EN_CONTENT = re.compile(r"[a-z][a-z'-]+")
_EN_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "so",
        "then",
        "what",
        "about",
        "how",
        "if",
        "is",
        "are",
        "do",
        "does",
        "can",
        "could",
        "will",
        "would",
        "i",
        "me",
        "my",
        "you",
        "your",
        "it",
        "that",
        "this",
        "there",
        "to",
        "for",
        "of",
        "in",
        "on",
        "at",
        "with",
        "be",
        "much",
        "many",
        "cost",
        "costs",
        "also",
        "too",
        "same",
        "one",
        "those",
        "these",
        "them",
        "ok",
        "okay",
    ]
)


def is_follow_up(text: str) -> bool:
    """Whether ``text`` leans on an earlier message (see above)."""
    norm = normalized(text).strip()
    han = len(_HAN.findall(norm))
    if han:
        if _FOLLOW_ZH.search(norm) or han <= 4:
            return True
        return bool(_FOLLOW_EN.search(norm))
    content = [w for w in _EN_CONTENT.findall(norm) if w not in _EN_STOP]
    return bool(_FOLLOW_EN.search(norm)) or len(content) <= 1 or len(norm) <= SHORT_CHARS


def standalone_question(text: str, history: Sequence[dict]) -> str:
    """``text`` made standalone: after the previous user message (that is not small talk)
    when it is a follow-up (``is_follow_up``), else unchanged."""
    previous = [
        str(m.get("content") or "").strip()
        for m in history
        if m.get("role") == "user" and str(m.get("content") or "").strip()
    ]
    previous = [p for p in previous if small_talk(p) is None and nothing_to_answer(p) is None]
    if not previous or not is_follow_up(text):
        return text
    return f"{previous[-1]} {text}"


def trim_history(history: Sequence[dict], max_chars: int) -> tuple[list[dict], int]:
    """The most recent turns of ``history`` whose contents fit in ``max_chars`` (the
    oldest dropped first), and how many turns were dropped."""
    kept: list[dict] = []
    used = 0
    for message in reversed(list(history)):
        size = len(str(message.get("content") or ""))
        if used + size > max_chars:
            break
        kept.append(message)
        used += size
    kept.reverse()
    return kept, len(history) - len(kept)


__all__ = [
    "NOTHING_TO_ANSWER_TEXT",
    "SMALL_TALK_TEXT",
    "is_follow_up",
    "nothing_to_answer",
    "question_after_injection",
    "small_talk",
    "small_talk_reply",
    "standalone_question",
    "third_language",
    "trim_history",
]
