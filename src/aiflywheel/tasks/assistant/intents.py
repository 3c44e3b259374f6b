"""Message checks the answer policy runs before retrieval: "I want a person" and
prompt-injection attempts, in Chinese and English.

Both are rule based and deterministic. Text is normalized first (NFKC, lower case,
curly quotes made straight), so full-width letters and punctuation do not matter.

``asks_for_person`` looks for a request to reach a human, not for the word: "human"
or "人工" alone appears in product questions ("human hair wig", "人工草坪",
"真人发假发"), so a match needs either a verb of reaching (talk/speak/connect/transfer
to ..., 转/找/要 ...) around a person word, a compound that only means a person
("live agent", "人工客服"), or a message that is nothing but such a word ("human!",
"人工"). A request negated just before ("I don't need a human", "不用转人工") does
not count, nor does an English question about when support can be reached ("Until
what time can I chat with someone from support?" asks for the opening hours).

``prompt_injection`` returns a short reason when a message tries to change the
assistant's rules: ignore/forget previous instructions, a new role ("you are now",
"扮演"), asks for the system prompt, a jailbreak mode, or a fake role marker.
"""

from __future__ import annotations

import re
import unicodedata

_PERSON_EN = (
    r"(?:a\s+|an\s+|the\s+|some\s+|your\s+|one\s+of\s+your\s+)?"
    r"(?:real\s+|live\s+|actual\s+|human\s+)?"
    r"(?:human(?:\s+being)?|person|people|agent|representative|rep|operator|someone|"
    r"somebody|staff(?:\s+member)?|employee|customer\s+(?:service|support|care)"
    r"(?:\s+(?:agent|representative|rep|team|person))?|support\s+(?:agent|team|staff|person)|"
    r"manager|supervisor)"
)
_REACH_EN = (
    r"(?:talk|speak|chat|connect|transfer|put|switch|escalate|forward|pass|hand)\w*"
    r"(?:\s+(?:me|this|it|my\s+(?:case|issue|question)))?(?:\s+(?:over|through))?"
    r"\s+(?:to|with)\s+"
)
_WANT_EN = (
    r"(?:want|need|get|give|find|request|prefer|require|(?:would|'d)\s+like)\w*"
    r"(?:\s+me)?\s+(?:to\s+have\s+)?"
)

_PERSON_PATTERNS_EN = [
    # "talk to a human", "connect me with an agent", "transfer me to customer service"
    re.compile(rf"\b{_REACH_EN}{_PERSON_EN}\b"),
    # "I want a real person", "get me a human"; bare "someone" is too vague here
    re.compile(
        rf"\b{_WANT_EN}(?:a\s+|an\s+|the\s+)?(?:real\s+|live\s+|actual\s+)?"
        r"(?:human(?:\s+being)?|person|agent|representative|operator)\b(?![\s-]*(?:hair|size|sized))"
    ),
    # compounds that only name a person to talk to
    re.compile(
        r"\b(?:real|live|actual)\s+(?:human|person|agent|representative|operator|support|chat)\b"
        r"|\bhuman\s+(?:agent|being|representative|operator|support|help|assistance)\b"
        r"|\bcustomer\s+(?:service|support|care)\s+(?:agent|representative|rep)\b"
    ),
    # refusing the bot, doubting it is a person
    re.compile(
        r"\b(?:don't|do\s+not)\s+want\s+(?:to\s+(?:talk|speak|chat)\s+(?:to|with)\s+)?"
        r"(?:a\s+|the\s+|this\s+|your\s+)?(?:bot|robot|chatbot|machine|ai)\b"
        r"|\b(?:stop|enough\s+of|no\s+more)\s+(?:the\s+|this\s+)?(?:bot|chatbot)\b"
        r"|\b(?:are|r)\s+(?:you|u)\s+(?:a\s+)?(?:real\s+)?(?:human|person)\b"
        r"|\bis\s+(?:there|anyone|anybody)\s+(?:a\s+)?(?:real\s+|human\s+)?"
        r"(?:person|human|one|body)\s+(?:there|here|available)\b"
    ),
]
# The whole message is a person word, maybe with "please", "i want", punctuation.
_BARE_EN = re.compile(
    r"^(?:(?:please|pls|plz|hey|hi|hello|ok|i\s+want|i\s+need|give\s+me|get\s+me|can\s+i\s+get)"
    r"\s+)*(?:a\s+|an\s+)?"
    r"(?:human|humans|agent|live\s+agent|representative|rep|operator|real\s+person|person|"
    r"customer\s+service|customer\s+support|live\s+chat|support\s+agent|staff)"
    r"(?:\s+(?:please|pls|plz|now|asap))*$"
)
# Before a match, these make it no request: a negation ("I don't need a human"), a
# question about a requirement ("do I need an agent to ..."), a comparison ("like a
# real person").
_NEGATION_EN = re.compile(
    r"\b(?:don'?t|do\s+not|doesn'?t|does\s+not|no\s+need\s+to|never|without|not)\s+"
    r"(?:(?:need|want|have|wish|like)\s+)?(?:to\s+)?$"
    r"|\b(?:do|does|would|will|should|must)\s+(?:i|we|you|it|they|one)\s+$"
    r"|\b(?:like|as|than)\s+(?:a\s+|an\s+|the\s+)?$"
)
# A question about when people can be reached asks for the opening hours, not a person.
_WHEN_EN = re.compile(
    r"^(?:(?:until|till|up\s+to|by)\s+)?(?:what\s+time|when|what\s+hours|which\s+hours|"
    r"which\s+days|what\s+days|how\s+late|how\s+early)\b"
)

# 人工 / 真人 as a person, not in 人工智能 (AI), 人工草坪 (artificial turf), 人工费 (labour
# cost), 真人发 (human hair), 真人秀 (reality show), ...
_RENGONG = (
    "人工(?!智能|草|皮|合成|湖|降雨|种|养|费|成本|晶|钻|宝石|耳蜗|关节|心脏"
    "|授精|呼吸|培育|材料|纤维|安装|制作|造)"
)
_ZHENREN = "真人(?!发|秀|版|cs|大小|尺寸|比例|娃娃|模特|照片|图|视频|实拍|头发)"
_PERSON_ZH = f"(?:{_RENGONG}|{_ZHENREN}|活人)"
_PERSON_PATTERNS_ZH = [
    re.compile(f"转(?:接)?(?:到)?(?:{_PERSON_ZH}|客服|专员)"),
    re.compile(r"人工(?:客服|服务|坐席|座席|接待|专员|回复|介入|处理)"),
    re.compile(f"(?:找|要|叫|接|换|请|求|联系|呼叫|切换|切到|给我)(?:一?个|一下|下)?{_PERSON_ZH}"),
    re.compile(
        r"(?:找|要|叫|换|联系|呼叫|接通|给我(?:接|转)?)(?:一?个|一下|下|你们的?)?"
        r"(?:客服|专员|工作人员|店员|经理|主管|负责人)"
    ),
    # "让客服人员来接一下", "让人工来处理"
    re.compile(
        f"让(?:一?个|一下|下|你们的?)?(?:{_PERSON_ZH}|客服|专员|工作人员|店员|经理)(?:人员)?"
        r"(?:来|过来|接|处理|帮|回复|联系)"
    ),
    re.compile(
        r"真人(?:客服|服务|回复|回答|接待)"
        f"|(?:和|跟|与|同)(?:{_PERSON_ZH}|客服)(?:说|聊|谈|沟通|对话|交流)"
    ),
    re.compile(
        f"(?:你是|是不是|是否)(?:{_PERSON_ZH}|机器人)|有(?:没有)?(?:人|真人|客服)在(?:吗|么|嘛)"
    ),
    re.compile(r"不(?:想|要)(?:跟|和|与)?(?:机器人|机器|ai|自动回复)"),
    re.compile(r"(?:投诉|找)(?:你们)?(?:经理|主管|负责人)"),
]
_BARE_ZH = re.compile(
    r"^(?:我要|我想要|我需要|请|给我|麻烦)?(?:人工|真人|客服|人工客服|转人工|找客服|在线客服|"
    r"客服在吗|有人吗|有人在吗|在吗有人吗)(?:谢谢|快点|呢|吧|啊)*$"
)
_NEGATION_ZH = re.compile(r"(?:不用|不需要|不必|无需|别|不要|没必要)$")

_PUNCT_RE = re.compile(
    r"[\s\.,!?;:\"()\[\]{}<>~`@#$%^&*_+=|\\/，。！？；：、“”‘’（）【】《》…·—\-]+"
)


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')


def _negated(before: str, negation: re.Pattern[str]) -> bool:
    return bool(negation.search(before[-30:]))


def asks_for_person(text: str) -> bool:
    """Whether the customer asks to reach a human (zh or en); see the module docstring."""
    norm = _normalize(text)
    words = " ".join(_PUNCT_RE.sub(" ", norm).split())
    if not words:
        return False
    compact = words.replace(" ", "")
    if _BARE_EN.match(words) or _BARE_ZH.match(compact):
        return True
    for pattern in () if _WHEN_EN.match(words) else _PERSON_PATTERNS_EN:
        for match in pattern.finditer(words):
            if not _negated(words[: match.start()], _NEGATION_EN):
                return True
    for pattern in _PERSON_PATTERNS_ZH:
        for match in pattern.finditer(compact):
            if not _negated(compact[: match.start()], _NEGATION_ZH):
                return True
    return False


_INJECTION_RULES: list[tuple[str, re.Pattern[str]]] = [
    (
        "asks to ignore or override the assistant's instructions",
        re.compile(
            r"\b(?:ignore|disregard|forget|override|bypass|stop\s+following)\s+"
            r"(?:all\s+|any\s+|every\s+)?(?:of\s+)?(?:the\s+|your\s+|these\s+|those\s+)?"
            r"(?:previous|prior|above|earlier|preceding|original|initial|system|current|old|"
            r"existing|all|safety)?\s*(?:instructions?|rules?|prompts?|directions?|"
            r"guidelines?|constraints?|restrictions?|programming)\b"
            r"|\b(?:ignore|disregard|forget)\s+(?:everything|all)\s+(?:above|before|you\s+were\s+told)"
            r"|\bnew\s+(?:instructions?|rules?)\s*:"
        ),
    ),
    (
        "asks to ignore or override the assistant's instructions",
        re.compile(
            r"(?:忽略|无视|忽视|忘记|忘掉|跳过|绕过|不要理会|别管|覆盖|抛开|放弃)"
            r"(?:掉)?(?:你)?(?:之前|以前|先前|上面|以上|前面|上述|所有|全部|原来|原有|原先|系统|刚才)?"
            r"(?:的|给你的|收到的)?(?:所有|全部|一切)?(?:的)?"
            r"(?:指令|指示|规则|设定|提示|命令|限制|约束|规定)"
            r"|新(?:的)?(?:指令|规则)[:：]"
        ),
    ),
    (
        "tries to give the assistant a new role",
        re.compile(
            r"\byou\s+are\s+now\b|\bfrom\s+now\s+on,?\s+(?:you|act|respond|answer)"
            r"|\b(?:you|please|now)\s+(?:will\s+|must\s+|should\s+|shall\s+)?act\s+as\b"
            r"|\bact\s+as\s+(?:if|though)\s+you\b|\bpretend\s+(?:to\s+be|you\s+are|you'?re|that\s+you)"
            r"|\brole[\s-]?play\s+as\b|\bimpersonate\b|\byour\s+new\s+(?:role|persona|name|job)\b"
            r"|\bbehave\s+(?:like|as)\s+(?:a|an)\s+(?:different|unrestricted|evil)"
        ),
    ),
    (
        "tries to give the assistant a new role",
        re.compile(
            r"(?:你|请你?)(?:现在|从现在起|从现在开始|来|要|去|就)?(?:扮演|假装|充当|冒充|装作)"
            r"|(?:从现在(?:开始|起)|今后|接下来)(?:,|，)?你(?:是|就是|将是|要|必须|扮演)"
            r"|你现在(?:是|就是|已经是|不再是)(?:一个|一名|一位)|(?<!角色)扮演(?:一个|一名|一位|成)"
            r"|你的新(?:身份|角色|名字)"
        ),
    ),
    (
        "asks for the assistant's hidden prompt or instructions",
        re.compile(
            r"\bsystem\s*(?:prompt|message|instructions?)\b"
            r"|\b(?:reveal|show|print|repeat|output|display|tell|give|share|leak|dump|write)\s+"
            r"(?:me\s+|us\s+)?(?:all\s+)?(?:of\s+)?your\s+(?:initial\s+|original\s+|hidden\s+|"
            r"secret\s+|full\s+|exact\s+)?(?:prompt|instructions|configuration)\b"
            r"|\b(?:reveal|print|repeat|output|dump|leak)\s+(?:me\s+)?the\s+(?:initial\s+|original\s+|"
            r"hidden\s+|secret\s+|full\s+|exact\s+|above\s+)?(?:prompt|instructions)\b"
            r"|\bwhat\s+(?:are|were|is)\s+your\s+(?:initial\s+|original\s+|hidden\s+|secret\s+)?"
            r"(?:instructions|prompt)\b|\b(?:text|words)\s+above\s+this\b"
        ),
    ),
    (
        "asks for the assistant's hidden prompt or instructions",
        re.compile(
            r"系统提示|提示词|系统指令|系统消息|system\s*prompt"
            r"|(?:输出|显示|告诉我|说出|打印|泄露|重复|给我看|发给我|透露)(?:一下|下)?(?:你的|你收到的)"
            r"(?:全部|所有|原始|初始|隐藏)?(?:指令|设定|规则|提示|配置)"
            r"|你的(?:指令|设定|规则|提示|初始设定)(?:是|有)(?:什么|哪些|啥)"
        ),
    ),
    (
        "asks for a jailbreak or unrestricted mode",
        re.compile(
            r"\b(?:developer|dev|god|jailbreak|jailbroken|unrestricted|dan)\s+mode\b|\bjailbreak"
            r"|\bdo\s+anything\s+now\b|\bwithout\s+(?:any\s+)?(?:restrictions|filters|rules)\b"
            r"|开发者模式|越狱|无限制模式|不受(?:任何)?限制"
        ),
    ),
    (
        "contains a fake system or role marker",
        re.compile(
            r"<\|?(?:im_start|im_end|system|start_header_id|endoftext)\|?>|\[/?(?:system|inst)\]"
            r"|^\s*#{2,}\s*(?:system|instruction)"
            r"|(?:^|\n)\s*system\s*[:：]\s*(?:you|ignore|from\s+now|new|忽略|你)"
            r"|<<\s*sys\s*>>|</?system>"
        ),
    ),
]


def prompt_injection(text: str) -> str | None:
    """A short reason when ``text`` tries to override the assistant's instructions
    (zh or en), else ``None``; see the module docstring."""
    norm = _normalize(text)
    compact = re.sub(r"\s+", "", norm)
    for reason, pattern in _INJECTION_RULES:
        if pattern.search(norm) or (not norm.isascii() and pattern.search(compact)):
            return reason
    return None
