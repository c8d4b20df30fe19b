"""Built-in instruction-tuning dataset, generated offline and deterministically.

Why this exists: the benchmark needs a default dataset so that ``dvc repro`` works on a fresh machine
with no download. Every record is an alpaca-style ``{"instruction", "input", "output"}`` dict whose
answer is one to three short, templated English sentences. The answer can be worked out from the
instruction (arithmetic, word games, a small table of correct facts), and the phrasing of the answer
is consistent within each task family, so BLEU-4 and ROUGE-L against the references are meaningful:
a small model fine-tuned on the data learns the answer style and scores visibly higher than before.

Only the standard library is used and all randomness comes from ``random.Random(seed)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import combinations

Triple = tuple[str, str, str]  # (instruction, input, output)


def _list(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------------------- fact tables
# country:capital:continent:capital is also the largest city (1/0). Continent "-" = not asked.
_COUNTRIES = """France:Paris:Europe:1 Germany:Berlin:Europe:1 Italy:Rome:Europe:1 Spain:Madrid:Europe:1
Portugal:Lisbon:Europe:1 Greece:Athens:Europe:1 Norway:Oslo:Europe:1 Sweden:Stockholm:Europe:1
Finland:Helsinki:Europe:1 Denmark:Copenhagen:Europe:1 Poland:Warsaw:Europe:1 Austria:Vienna:Europe:1
Ireland:Dublin:Europe:1 Hungary:Budapest:Europe:1 Belgium:Brussels:Europe:0 Romania:Bucharest:Europe:1
Bulgaria:Sofia:Europe:1 Croatia:Zagreb:Europe:1 Serbia:Belgrade:Europe:1 Ukraine:Kyiv:Europe:1
Iceland:Reykjavik:Europe:1 Japan:Tokyo:Asia:1 China:Beijing:Asia:0 India:New_Delhi:Asia:0
Thailand:Bangkok:Asia:1 Vietnam:Hanoi:Asia:0 South_Korea:Seoul:Asia:1 Iran:Tehran:Asia:1
Saudi_Arabia:Riyadh:Asia:1 Pakistan:Islamabad:Asia:0 Bangladesh:Dhaka:Asia:1 Nepal:Kathmandu:Asia:1
Mongolia:Ulaanbaatar:Asia:1 Iraq:Baghdad:Asia:1 Afghanistan:Kabul:Asia:1 Laos:Vientiane:Asia:1
Cambodia:Phnom_Penh:Asia:1 Kenya:Nairobi:Africa:1 Egypt:Cairo:Africa:1 Nigeria:Abuja:Africa:0
Ghana:Accra:Africa:0 Ethiopia:Addis_Ababa:Africa:1 Morocco:Rabat:Africa:0 Senegal:Dakar:Africa:0
Uganda:Kampala:Africa:1 Zimbabwe:Harare:Africa:1 Zambia:Lusaka:Africa:1 Mali:Bamako:Africa:1
Algeria:Algiers:Africa:1 Tunisia:Tunis:Africa:1 Angola:Luanda:Africa:1 Rwanda:Kigali:Africa:1
Canada:Ottawa:North_America:0 Mexico:Mexico_City:North_America:1 Cuba:Havana:North_America:1
Jamaica:Kingston:North_America:1 Guatemala:Guatemala_City:North_America:0
Honduras:Tegucigalpa:North_America:0 Panama:Panama_City:North_America:1
Nicaragua:Managua:North_America:1 Argentina:Buenos_Aires:South_America:1 Peru:Lima:South_America:1
Chile:Santiago:South_America:1 Venezuela:Caracas:South_America:0 Uruguay:Montevideo:South_America:1
Ecuador:Quito:South_America:0 Brazil:Brasilia:South_America:0 Guyana:Georgetown:South_America:1
Suriname:Paramaribo:South_America:1 Australia:Canberra:-:0 New_Zealand:Wellington:-:0"""

_ANTONYMS = """hot:cold cold:hot up:down down:up happy:sad sad:happy fast:slow slow:fast early:late
late:early day:night night:day inside:outside outside:inside empty:full full:empty rich:poor poor:rich
strong:weak weak:strong wet:dry dry:wet clean:dirty dirty:clean loud:quiet top:bottom bottom:top
win:lose buy:sell sell:buy push:pull pull:push before:after after:before true:false false:true
north:south south:north east:west west:east above:below below:above first:last last:first
always:never never:always entrance:exit exit:entrance question:answer answer:question friend:enemy
enemy:friend love:hate hate:love asleep:awake awake:asleep dangerous:safe cheap:expensive
expensive:cheap wide:narrow narrow:wide heavy:light deep:shallow shallow:deep soft:hard good:bad
bad:good high:low low:high near:far far:near open:closed closed:open success:failure failure:success
polite:rude rude:polite many:few few:many more:less less:more positive:negative negative:positive
visible:invisible possible:impossible correct:incorrect summer:winter winter:summer import:export
export:import male:female female:male tall:short long:short big:small remember:forget forget:remember
increase:decrease decrease:increase maximum:minimum minimum:maximum"""

_PLURALS = """cat:cats dog:dogs book:books apple:apples house:houses chair:chairs box:boxes fox:foxes
bus:buses church:churches dish:dishes watch:watches glass:glasses baby:babies city:cities story:stories
party:parties key:keys day:days toy:toys boy:boys child:children mouse:mice man:men woman:women
tooth:teeth foot:feet goose:geese person:people sheep:sheep deer:deer ox:oxen knife:knives leaf:leaves
wolf:wolves half:halves life:lives wife:wives loaf:loaves shelf:shelves thief:thieves potato:potatoes
tomato:tomatoes hero:heroes photo:photos piano:pianos roof:roofs crisis:crises analysis:analyses"""

_PAST = """go:went eat:ate see:saw run:ran write:wrote take:took give:gave come:came make:made buy:bought
think:thought bring:brought catch:caught teach:taught sing:sang swim:swam drink:drank begin:began fly:flew
know:knew grow:grew throw:threw draw:drew drive:drove ride:rode speak:spoke break:broke choose:chose
forget:forgot sit:sat stand:stood understand:understood tell:told sell:sold find:found hold:held
feel:felt keep:kept sleep:slept leave:left meet:met pay:paid say:said send:sent spend:spent build:built
lose:lost win:won read:read put:put cut:cut walk:walked play:played jump:jumped cook:cooked
watch:watched study:studied try:tried stop:stopped plan:planned carry:carried dance:danced live:lived"""

_WORDS = _list("""apple banana garden window planet river mountain pencil school doctor flower orange castle
bridge forest island rocket kitten candle basket button dragon guitar jacket ladder market needle pepper
rabbit silver ticket tomato violin wallet yellow zebra anchor butter carpet desert engine finger hammer insect
jungle kettle lemon magnet number onion parrot puzzle rainbow saddle tunnel umbrella valley winter bottle
cookie dinner elephant feather giraffe harbor iceberg journey kingdom lantern mirror notebook ocean
pillow quilt sandwich teacher village whistle airport blanket chicken""")

_FRUITS = _list("apple banana cherry grape kiwi lemon mango melon orange peach pear plum")
_SUBJECTS = ["The cat", "My brother", "The teacher", "Our neighbor", "The little girl", "Tom", "Anna"]
_SUBJECTS += ["The farmer", "The old man", "The student"]
_VERB_PHRASES = """walks to school|walked to school;eats an apple|ate an apple;reads a book|read a book;
drinks a glass of milk|drank a glass of milk;writes a letter|wrote a letter;sings a song|sang a song;
buys some bread|bought some bread;plays in the garden|played in the garden;sees a bird|saw a bird;
cleans the kitchen|cleaned the kitchen;finds a coin|found a coin;makes a cake|made a cake;
opens the window|opened the window;carries a heavy bag|carried a heavy bag;takes the bus|took the bus;
sleeps on the sofa|slept on the sofa"""

_LEGS = """dog:4 cat:4 horse:4 cow:4 elephant:4 pig:4 sheep:4 goat:4 lion:4 tiger:4 zebra:4 giraffe:4
rabbit:4 mouse:4 camel:4 fox:4 spider:8 scorpion:8 ant:6 bee:6 beetle:6 ladybug:6 grasshopper:6
chicken:2 duck:2 ostrich:2 penguin:2 owl:2 parrot:2 snake:0"""
_SOUNDS = """dog:barks:bark cat:meows:meow cow:moos:moo lion:roars:roar duck:quacks:quack horse:neighs:neigh
sheep:bleats:bleat pig:oinks:oink owl:hoots:hoot snake:hisses:hiss bee:buzzes:buzz frog:croaks:croak
rooster:crows:crow wolf:howls:howl donkey:brays:bray mouse:squeaks:squeak"""

_DAYS = _list("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
_MONTHS = _list("January February March April May June July August September October November December")
_UNITS = """kilometer:kilometers:meters:1000 meter:meters:centimeters:100 kilogram:kilograms:grams:1000
hour:hours:minutes:60 minute:minutes:seconds:60 day:days:hours:24 week:weeks:days:7
liter:liters:milliliters:1000 year:years:months:12"""

_ONES = _list("""zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen""")
_TENS = _list("_ _ twenty thirty forty fifty sixty seventy eighty ninety")


# ---------------------------------------------------------------------------- helpers
def _table(text: str, sep: str = ":", item_sep: str | None = None) -> list[list[str]]:
    """Split a compact table into rows of fields; underscores stand for spaces."""
    items = text.split(item_sep) if item_sep else text.split()
    return [[f.strip().replace("_", " ") for f in item.split(sep)] for item in items if item.strip()]


def _words(n: int) -> str:
    """Spell 0..999 in English words (American style, no "and")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    return f"{_ONES[hundreds]} hundred" + (f" {_words(rest)}" if rest else "")


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def _expand(facts: list[dict], phrasings: list[Triple]) -> list[Triple]:
    """Every fact in every phrasing; each phrasing is (instruction, input, output) templates."""
    return [(i.format(**f), x.format(**f), o.format(**f)) for f in facts for i, x, o in phrasings]


# ---------------------------------------------------------------------------- families
def _addition(rng: random.Random) -> list[Triple]:
    facts = [{"a": a, "b": b, "r": a + b} for a in range(1, 21) for b in range(1, 21)]
    return _expand(facts, [
        ("What is {a} plus {b}?", "", "{a} plus {b} equals {r}."),
        ("Add {a} and {b}.", "", "{a} plus {b} equals {r}."),
        ("What is the sum of {a} and {b}?", "", "The sum of {a} and {b} is {r}."),
    ])  # fmt: skip


def _subtraction(rng: random.Random) -> list[Triple]:
    facts = [{"a": a, "b": b, "r": a - b} for a in range(1, 31) for b in range(1, a + 1)]
    return _expand(facts, [
        ("What is {a} minus {b}?", "", "{a} minus {b} equals {r}."),
        ("Subtract {b} from {a}.", "", "{a} minus {b} equals {r}."),
        ("What do you get if you take {b} away from {a}?", "", "If you take {b} away from {a}, you get {r}."),
    ])  # fmt: skip


def _multiplication(rng: random.Random) -> list[Triple]:
    facts = [{"a": a, "b": b, "r": a * b} for a in range(2, 13) for b in range(2, 13)]
    return _expand(facts, [
        ("What is {a} times {b}?", "", "{a} times {b} equals {r}."),
        ("Multiply {a} by {b}.", "", "{a} multiplied by {b} equals {r}."),
        ("What is the product of {a} and {b}?", "", "The product of {a} and {b} is {r}."),
    ])  # fmt: skip


def _comparison(rng: random.Random) -> list[Triple]:
    facts = []
    for a in range(1, 31):
        for b in range(1, 31):
            if a != b:
                yes = f"Yes, {a} is greater than {b}." if a > b else f"No, {a} is not greater than {b}."
                facts.append({"a": a, "b": b, "hi": max(a, b), "lo": min(a, b), "yes": yes})
    return _expand(facts, [
        ("Which number is larger, {a} or {b}?", "", "{hi} is larger than {lo}."),
        ("Which number is smaller, {a} or {b}?", "", "{lo} is smaller than {hi}."),
        ("Is {a} greater than {b}?", "", "{yes}"),
    ])  # fmt: skip


def _parity(rng: random.Random) -> list[Triple]:
    facts = []
    for n in range(1, 301):
        even = n % 2 == 0
        yes = f"Yes, {n} is an even number." if even else f"No, {n} is an odd number."
        facts.append({"n": n, "p": "even" if even else "odd", "yes": yes})
    return _expand(facts, [
        ("Is {n} an even or an odd number?", "", "{n} is an {p} number."),
        ("Tell me whether {n} is even or odd.", "", "{n} is an {p} number."),
        ("Is {n} an even number?", "", "{yes}"),
    ])  # fmt: skip


def _number_words(rng: random.Random) -> list[Triple]:
    facts = [{"n": n, "w": _words(n)} for n in range(1, 501)]
    return _expand(facts, [
        ("Write the number {n} in words.", "", "The number {n} is written as {w}."),
        ("How do you spell {n} in words?", "", "The number {n} is written as {w}."),
        ("Spell out the following number in words.", "{n}", "The number {n} is written as {w}."),
    ])  # fmt: skip


def _units(rng: random.Random) -> list[Triple]:
    facts = []
    for one, many, small, factor in _table(_UNITS):
        for v in range(1, 21):
            facts.append({"v": v, "big": one if v == 1 else many, "small": small, "r": v * int(factor)})
    return _expand(facts, [
        ("How many {small} are in {v} {big}?", "", "{v} {big} is equal to {r} {small}."),
        ("Convert {v} {big} to {small}.", "", "{v} {big} is equal to {r} {small}."),
        ("What is {v} {big} in {small}?", "", "{v} {big} is equal to {r} {small}."),
    ])  # fmt: skip


def _capitals(rng: random.Random) -> list[Triple]:
    facts = []
    for country, capital, _, largest in _table(_COUNTRIES):
        extra = f" {capital} is also the largest city in {country}." if largest == "1" else ""
        facts.append({"c": country, "cap": capital, "extra": extra})
    return _expand(facts, [
        ("What is the capital of {c}?", "", "The capital of {c} is {cap}.{extra}"),
        ("Name the capital city of {c}.", "", "The capital of {c} is {cap}.{extra}"),
        ("Which city is the capital of {c}?", "", "The capital of {c} is {cap}.{extra}"),
    ])  # fmt: skip


def _continents(rng: random.Random) -> list[Triple]:
    facts = [{"c": c, "k": k} for c, _, k, _ in _table(_COUNTRIES) if k != "-"]
    return _expand(facts, [
        ("On which continent is {c}?", "", "{c} is in {k}."),
        ("Which continent is {c} in?", "", "{c} is in {k}."),
        ("Name the continent where {c} is located.", "", "{c} is located in {k}."),
    ])  # fmt: skip


def _antonyms(rng: random.Random) -> list[Triple]:
    facts = [{"w": w, "a": a} for w, a in _table(_ANTONYMS)]
    return _expand(facts, [
        ('What is the opposite of "{w}"?', "", "The opposite of {w} is {a}."),
        ('Give an antonym for the word "{w}".', "", "An antonym for {w} is {a}."),
        ("Write the opposite of the following word.", "{w}", "The opposite of {w} is {a}."),
    ])  # fmt: skip


def _plurals(rng: random.Random) -> list[Triple]:
    facts = [{"w": w, "p": p} for w, p in _table(_PLURALS)]
    return _expand(facts, [
        ('What is the plural of "{w}"?', "", "The plural of {w} is {p}."),
        ('Write the plural form of the noun "{w}".', "", "The plural form of {w} is {p}."),
        ("Give the plural of the following noun.", "{w}", "The plural of {w} is {p}."),
    ])  # fmt: skip


def _past_tense(rng: random.Random) -> list[Triple]:
    facts = [{"v": v, "p": p} for v, p in _table(_PAST)]
    return _expand(facts, [
        ('What is the past tense of "{v}"?', "", "The past tense of {v} is {p}."),
        ('Give the simple past form of the verb "{v}".', "", "The simple past form of {v} is {p}."),
        ("Write the past tense of the following verb.", "{v}", "The past tense of {v} is {p}."),
    ])  # fmt: skip


def _sentence_past(rng: random.Random) -> list[Triple]:
    phrases = _table(_VERB_PHRASES, sep="|", item_sep=";")
    facts = [{"s": s, "now": now, "past": past} for s in _SUBJECTS for now, past in phrases]
    return _expand(facts, [
        ("Rewrite this sentence in the past tense.", "{s} {now}.", "{s} {past}."),
        ("Change the following sentence to the past tense.", "{s} {now}.", "{s} {past}."),
        ('Put "{s} {now}." into the past tense.', "", "In the past tense, the sentence is: {s} {past}."),
    ])  # fmt: skip


def _letter_count(rng: random.Random) -> list[Triple]:
    facts = [{"w": w, "n": len(w)} for w in _WORDS]
    return _expand(facts, [
        ('How many letters are in the word "{w}"?', "", "The word {w} has {n} letters."),
        ('Count the letters in "{w}".', "", "The word {w} has {n} letters."),
        ("Count the letters in the following word.", "{w}", "The word {w} has {n} letters."),
    ])  # fmt: skip


def _first_last_letter(rng: random.Random) -> list[Triple]:
    facts = [{"w": w, "f": w[0], "l": w[-1]} for w in _WORDS]
    return _expand(facts, [
        ('What is the first letter of the word "{w}"?', "", "The word {w} starts with the letter {f}."),
        ('Which letter does "{w}" start with?', "", "The word {w} starts with the letter {f}."),
        ('What is the last letter of the word "{w}"?', "", "The word {w} ends with the letter {l}."),
        ('Which letter does "{w}" end with?', "", "The word {w} ends with the letter {l}."),
    ])  # fmt: skip


def _reverse_word(rng: random.Random) -> list[Triple]:
    facts = [{"w": w, "r": w[::-1]} for w in _WORDS]
    return _expand(facts, [
        ('Spell the word "{w}" backwards.', "", "The word {w} spelled backwards is {r}."),
        ('Reverse the letters of "{w}".', "", "The word {w} spelled backwards is {r}."),
        ("Reverse the letters of the following word.", "{w}", "The word {w} spelled backwards is {r}."),
    ])  # fmt: skip


def _sort_words(rng: random.Random) -> list[Triple]:
    asks = ["Sort these words alphabetically.", "Put the following words in alphabetical order."]
    asks.append("Arrange these words from A to Z.")
    out = []
    for k in (3, 4):
        for combo in combinations(_FRUITS, k):  # _FRUITS is sorted, so combo is in order
            shown = list(combo)
            rng.shuffle(shown)
            answer = "In alphabetical order, the words are " + ", ".join(combo[:-1]) + f", and {combo[-1]}."
            out.append((rng.choice(asks), ", ".join(shown), answer))
    return out


def _calendar(rng: random.Random) -> list[Triple]:
    days = []
    for i, day in enumerate(_DAYS):
        for k in range(1, 7):
            span = "one day" if k == 1 else f"{_words(k)} days"
            after, before = _DAYS[(i + k) % 7], _DAYS[(i - k) % 7]
            days.append({"d": day, "s": span, "S": span.capitalize(), "a": after, "b": before})
    months = [{"m": m, "a": _MONTHS[(i + 1) % 12], "b": _MONTHS[i - 1]} for i, m in enumerate(_MONTHS)]
    return _expand(days, [
        ("What day comes {s} after {d}?", "", "{S} after {d} is {a}."),
        ("If today is {d}, what day will it be in {s}?", "", "If today is {d}, in {s} it will be {a}."),
        ("What day comes {s} before {d}?", "", "{S} before {d} is {b}."),
        ("If today is {d}, what day was it {s} ago?", "", "If today is {d}, {s} ago it was {b}."),
    ]) + _expand(months, [
        ("What month comes after {m}?", "", "The month after {m} is {a}."),
        ("Which month follows {m}?", "", "{a} follows {m}."),
        ("What month comes before {m}?", "", "The month before {m} is {b}."),
        ("Which month comes right before {m}?", "", "The month before {m} is {b}."),
    ])  # fmt: skip


def _animals(rng: random.Random) -> list[Triple]:
    legs = []
    for animal, n in _table(_LEGS):
        art = _article(animal)
        count = "no" if n == "0" else _words(int(n))
        legs.append({"x": animal, "a": art, "A": art.capitalize(), "n": count})
    sounds = [
        {"x": x, "a": _article(x), "A": _article(x).capitalize(), "v": v, "s": s, "an": _article(s)}
        for x, v, s in _table(_SOUNDS)
    ]
    return _expand(legs, [
        ("How many legs does {a} {x} have?", "", "{A} {x} has {n} legs."),
        ("Tell me how many legs {a} {x} has.", "", "{A} {x} has {n} legs."),
        ("What is the number of legs of {a} {x}?", "", "{A} {x} has {n} legs."),
    ]) + _expand(sounds, [
        ("What sound does {a} {x} make?", "", "{A} {x} {v}."),
        ("What noise does {a} {x} make?", "", "{A} {x} {v}."),
        ("What do you call the sound {a} {x} makes?", "", "The sound {a} {x} makes is called {an} {s}."),
    ])  # fmt: skip


_BUILDERS: tuple[Callable[[random.Random], list[Triple]], ...] = (
    _addition, _subtraction, _multiplication, _comparison, _parity, _number_words, _units, _capitals,
    _continents, _antonyms, _plurals, _past_tense, _sentence_past, _letter_count, _first_last_letter,
    _reverse_word, _sort_words, _calendar, _animals,
)  # fmt: skip
FAMILIES: tuple[str, ...] = tuple(build.__name__.lstrip("_") for build in _BUILDERS)


# ---------------------------------------------------------------------------- mixing
def _pools(rng: random.Random) -> list[list[tuple[str, dict[str, str]]]]:
    """Per family, its shuffled records tagged with the family name, without duplicates anywhere."""
    seen: set[tuple[str, str]] = set()
    pools = []
    for name, build in zip(FAMILIES, _BUILDERS, strict=True):
        pool = []
        for instruction, inp, output in build(rng):
            if (instruction, inp) not in seen:
                seen.add((instruction, inp))
                pool.append((name, {"instruction": instruction, "input": inp, "output": output}))
        rng.shuffle(pool)
        pools.append(pool)
    return pools


def _tagged(n: int, seed: int) -> list[tuple[str, dict[str, str]]]:
    """First n (family, record) pairs, round-robin over families in a fresh random order each round."""
    rng = random.Random(seed)
    pools = _pools(rng)
    capacity = sum(len(p) for p in pools)
    if not 0 <= n <= capacity:
        raise ValueError(f"n must be between 0 and {capacity} (the number of distinct records); got {n}")
    out: list[tuple[str, dict[str, str]]] = []
    cursors = [0] * len(pools)
    while len(out) < n:
        order = [i for i in range(len(pools)) if cursors[i] < len(pools[i])]
        rng.shuffle(order)
        for i in order[: n - len(out)]:
            out.append(pools[i][cursors[i]])
            cursors[i] += 1
    return out


def generate(n: int = 2400, seed: int = 0) -> list[dict[str, str]]:
    """Return n distinct alpaca-style records {"instruction": str, "input": str, "output": str}."""
    return [record for _, record in _tagged(n, seed)]
