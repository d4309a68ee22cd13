"""Word lists for the generated German-English `sample` corpus (see seq2seq/corpora/sample.py).

Semantic classes keep sentences plausible: P person, A animal, T portable thing, C clothing,
F food, D drink, R text (readable), Y story, V vehicle, L place, S furniture, W street/bridge.
"""

from __future__ import annotations

from dataclasses import dataclass

# gender;German singular;German plural;English singular;English plural;classes[;oblique]
# oblique: "~n"/"~en" marks a weak masculine noun (den Jungen, dem Jungen, des Jungen);
# "es" a genitive singular in -es (des Mannes); other masculine/neuter nouns take -s.
NOUNS = """
m;Mann;Männer;man;men;P;es
f;Frau;Frauen;woman;women;P
n;Kind;Kinder;child;children;P;es
m;Junge;Jungen;boy;boys;P;~n
n;Mädchen;Mädchen;girl;girls;P
m;Vater;Väter;father;fathers;P
f;Mutter;Mütter;mother;mothers;P
m;Bruder;Brüder;brother;brothers;P
f;Schwester;Schwestern;sister;sisters;P
m;Freund;Freunde;friend;friends;P;es
m;Lehrer;Lehrer;teacher;teachers;P
f;Lehrerin;Lehrerinnen;female teacher;female teachers;P
m;Arzt;Ärzte;doctor;doctors;P;es
m;Koch;Köche;cook;cooks;P
m;Bauer;Bauern;farmer;farmers;P;~n
m;Student;Studenten;student;students;P;~en
m;Nachbar;Nachbarn;neighbour;neighbours;P;~n
m;König;Könige;king;kings;P
f;Königin;Königinnen;queen;queens;P
m;Polizist;Polizisten;police officer;police officers;P;~en
m;Verkäufer;Verkäufer;seller;sellers;P
f;Großmutter;Großmütter;grandmother;grandmothers;P
m;Großvater;Großväter;grandfather;grandfathers;P
m;Onkel;Onkel;uncle;uncles;P
f;Tante;Tanten;aunt;aunts;P
m;Sohn;Söhne;son;sons;P;es
f;Tochter;Töchter;daughter;daughters;P
m;Gast;Gäste;guest;guests;P;es
m;Fahrer;Fahrer;driver;drivers;P
m;Bäcker;Bäcker;baker;bakers;P
m;Künstler;Künstler;artist;artists;P
m;Sänger;Sänger;singer;singers;P
m;Soldat;Soldaten;soldier;soldiers;P;~en
m;Kellner;Kellner;waiter;waiters;P
m;Prinz;Prinzen;prince;princes;P;~en
f;Prinzessin;Prinzessinnen;princess;princesses;P
m;Dieb;Diebe;thief;thieves;P;es
m;Hund;Hunde;dog;dogs;A
f;Katze;Katzen;cat;cats;A
n;Pferd;Pferde;horse;horses;A
m;Vogel;Vögel;bird;birds;A
f;Maus;Mäuse;mouse;mice;A
f;Kuh;Kühe;cow;cows;A
n;Schwein;Schweine;pig;pigs;A
n;Schaf;Schafe;sheep;sheep;A
m;Fisch;Fische;fish;fish;A
m;Löwe;Löwen;lion;lions;A;~n
m;Bär;Bären;bear;bears;A;~en
m;Affe;Affen;monkey;monkeys;A;~n
f;Ente;Enten;duck;ducks;A
n;Huhn;Hühner;chicken;chickens;A
m;Hase;Hasen;rabbit;rabbits;A;~n
m;Elefant;Elefanten;elephant;elephants;A;~en
m;Fuchs;Füchse;fox;foxes;A
m;Wolf;Wölfe;wolf;wolves;A
f;Ziege;Ziegen;goat;goats;A
f;Schlange;Schlangen;snake;snakes;A
m;Esel;Esel;donkey;donkeys;A
m;Ball;Bälle;ball;balls;T
m;Schlüssel;Schlüssel;key;keys;T
f;Tasche;Taschen;bag;bags;T
m;Hut;Hüte;hat;hats;TC
m;Schuh;Schuhe;shoe;shoes;TC
n;Hemd;Hemden;shirt;shirts;TC
f;Jacke;Jacken;jacket;jackets;TC
m;Mantel;Mäntel;coat;coats;TC
n;Kleid;Kleider;dress;dresses;TC
m;Pullover;Pullover;sweater;sweaters;TC
f;Uhr;Uhren;watch;watches;T
n;Handy;Handys;phone;phones;T
m;Stift;Stifte;pen;pens;T
f;Lampe;Lampen;lamp;lamps;T
f;Blume;Blumen;flower;flowers;T
n;Geschenk;Geschenke;present;presents;T
m;Koffer;Koffer;suitcase;suitcases;T
f;Kamera;Kameras;camera;cameras;T
n;Spielzeug;Spielzeuge;toy;toys;T
m;Teller;Teller;plate;plates;T
f;Tasse;Tassen;cup;cups;T
n;Glas;Gläser;glass;glasses;T
n;Messer;Messer;knife;knives;T
m;Löffel;Löffel;spoon;spoons;T
f;Flasche;Flaschen;bottle;bottles;T
m;Regenschirm;Regenschirme;umbrella;umbrellas;T
f;Gitarre;Gitarren;guitar;guitars;T
n;Bild;Bilder;picture;pictures;T
m;Computer;Computer;computer;computers;T
m;Stein;Steine;stone;stones;T
f;Kiste;Kisten;box;boxes;T
f;Puppe;Puppen;doll;dolls;T
f;Kerze;Kerzen;candle;candles;T
m;Apfel;Äpfel;apple;apples;F
f;Banane;Bananen;banana;bananas;F
n;Brötchen;Brötchen;roll;rolls;F
m;Kuchen;Kuchen;cake;cakes;F
f;Suppe;Suppen;soup;soups;F
n;Ei;Eier;egg;eggs;F
f;Birne;Birnen;pear;pears;F
f;Orange;Orangen;orange;oranges;F
f;Tomate;Tomaten;tomato;tomatoes;F
f;Kartoffel;Kartoffeln;potato;potatoes;F
f;Pizza;Pizzas;pizza;pizzas;F
f;Wurst;Würste;sausage;sausages;F
f;Karotte;Karotten;carrot;carrots;F
m;Keks;Kekse;cookie;cookies;F
f;Erdbeere;Erdbeeren;strawberry;strawberries;F
f;Zitrone;Zitronen;lemon;lemons;F
m;Kaffee;Kaffees;coffee;coffees;D
m;Tee;Tees;tea;teas;D
n;Bier;Biere;beer;beers;D
m;Saft;Säfte;juice;juices;D
f;Limonade;Limonaden;lemonade;lemonades;D
m;Wein;Weine;wine;wines;D
n;Buch;Bücher;book;books;R
f;Zeitung;Zeitungen;newspaper;newspapers;R
m;Brief;Briefe;letter;letters;R
f;Geschichte;Geschichten;story;stories;RY
f;Karte;Karten;map;maps;R
n;Gedicht;Gedichte;poem;poems;R
f;Zeitschrift;Zeitschriften;magazine;magazines;R
n;Heft;Hefte;notebook;notebooks;R
f;Nachricht;Nachrichten;message;messages;R
n;Auto;Autos;car;cars;V
m;Bus;Busse;bus;buses;V
m;Zug;Züge;train;trains;V
n;Fahrrad;Fahrräder;bicycle;bicycles;V
n;Boot;Boote;boat;boats;V
n;Flugzeug;Flugzeuge;airplane;airplanes;V
m;Lastwagen;Lastwagen;truck;trucks;V
n;Taxi;Taxis;taxi;taxis;V
m;Park;Parks;park;parks;L
m;Garten;Gärten;garden;gardens;L
n;Haus;Häuser;house;houses;L
f;Küche;Küchen;kitchen;kitchens;L
f;Schule;Schulen;school;schools;L
f;Stadt;Städte;city;cities;L
m;Bahnhof;Bahnhöfe;station;stations;L
m;Wald;Wälder;forest;forests;L
n;Dorf;Dörfer;village;villages;L
f;Kirche;Kirchen;church;churches;L
m;Markt;Märkte;market;markets;L
n;Restaurant;Restaurants;restaurant;restaurants;L
n;Museum;Museen;museum;museums;L
n;Hotel;Hotels;hotel;hotels;L
f;Bibliothek;Bibliotheken;library;libraries;L
n;Zimmer;Zimmer;room;rooms;L
m;Laden;Läden;shop;shops;L
n;Büro;Büros;office;offices;L
m;Zoo;Zoos;zoo;zoos;L
n;Krankenhaus;Krankenhäuser;hospital;hospitals;L
f;Straße;Straßen;street;streets;W
f;Brücke;Brücken;bridge;bridges;W
m;Tisch;Tische;table;tables;S
m;Stuhl;Stühle;chair;chairs;S
n;Bett;Betten;bed;beds;S
n;Sofa;Sofas;sofa;sofas;S
n;Regal;Regale;shelf;shelves;S
m;Schrank;Schränke;cupboard;cupboards;S
f;Bank;Bänke;bench;benches;S
m;Teppich;Teppiche;carpet;carpets;S
"""

# frame;infinitive (prefix+verb when separable);forms;English base;subject;object;indirect;flags
# frames: i intransitive, t accusative object, d dative object, di dative + accusative,
#   s dass-complement, q ob-complement, c copula.
# forms: empty (regular), "du,er" stem-vowel changes, or all six present forms.
# flags: m manner adverb, g direction, l location, c companion (mit/ohne), b beneficiary (für).
VERBS = """
i;schlafen;schläfst,schläft;sleep;PA;;;l
i;laufen;läufst,läuft;run;PA;;;mglc
i;gehen;;walk;PA;;;mgc
i;fahren;fährst,fährt;drive;P;;;mgc
i;schwimmen;;swim;PA;;;mglc
i;spielen;;play;PA;;;lc
i;arbeiten;arbeitest,arbeitet;work;P;;;mlc
i;warten;wartest,wartet;wait;PA;;;lc
i;lachen;;laugh;P;;;ml
i;weinen;;cry;P;;;ml
i;singen;;sing;P;;;mlc
i;tanzen;;dance;P;;;mlc
i;springen;;jump;PA;;;ml
i;sitzen;;sit;PA;;;l
i;wohnen;;live;P;;;lc
i;kommen;;come;PA;;;mgc
i;bleiben;;stay;PA;;;lc
i;reisen;;travel;P;;;mgc
i;lernen;;study;P;;;mlc
i;wandern;;hike;P;;;glc
i;schreien;;scream;PA;;;ml
i;klettern;;climb;PA;;;ml
i;träumen;;dream;PA;;;l
i;auf+stehen;;get up;P;;;m
i;ein+schlafen;schläfst,schläft;fall asleep;PA;;;l
i;an+kommen;;arrive;P;;;mc
i;ein+kaufen;;go shopping;P;;;c
i;fern+sehen;siehst,sieht;watch TV;P;;;lc
t;sehen;siehst,sieht;see;PA;PATFDRVLSW;;l
t;lesen;liest,liest;read;P;R;;ml
t;essen;isst,isst;eat;PA;F;;ml
t;trinken;;drink;PA;D;;ml
t;kaufen;;buy;P;TFDRV;;lb
t;verkaufen;;sell;P;TFDRV;;l
t;suchen;;look for;PA;PATRV;;l
t;finden;findest,findet;find;PA;PATRV;;l
t;nehmen;nimmst,nimmt;take;P;TFDR;;
t;tragen;trägst,trägt;carry;P;TFRS;;ml
t;halten;hältst,hält;hold;P;TAR;;
t;waschen;wäschst,wäscht;wash;P;TVAS;;lb
t;malen;;paint;P;PATFVL;;lb
t;zeichnen;zeichnest,zeichnet;draw;P;PATFVL;;lb
t;besuchen;;visit;P;PL;;c
t;lieben;;love;P;PA;;
t;mögen;mag,magst,mag,mögen,mögt,mögen;like;P;PAFDRT;;
t;kennen;;know;P;PLR;;
t;brauchen;;need;P;TVRFD;;
t;bauen;;build;P;LVS;;b
t;reparieren;;repair;P;TVS;;lb
t;putzen;;clean;P;LVS;;b
t;fangen;fängst,fängt;catch;PA;AT;;
t;werfen;wirfst,wirft;throw;P;T;;m
t;vergessen;vergisst,vergisst;forget;P;TRP;;
t;treffen;triffst,trifft;meet;P;P;;lc
t;fragen;;ask;P;P;;l
t;rufen;;call;P;PA;;m
t;hören;;hear;PA;PAV;;l
t;füttern;;feed;P;A;;l
t;sammeln;;collect;P;T;;l
t;kochen;;cook;P;F;;lb
t;backen;;bake;P;F;;lb
t;schreiben;;write;P;R;;mlb
t;bezahlen;;pay for;P;TFDRV;;
t;benutzen;;use;P;TVS;;
t;verstehen;;understand;P;PR;;
t;holen;;fetch;P;PTFDR;;b
t;zählen;;count;P;TFA;;
t;öffnen;öffnest,öffnet;open;P;TRV;;m
t;schließen;;close;P;TRV;;m
t;streicheln;;stroke;P;A;;l
t;verlieren;;lose;P;TR;;l
t;haben;habe,hast,hat,haben,habt,haben;have;PA;PATVR;;
t;an+rufen;;phone;P;P;;
t;an+schauen;;look at;PA;PATFDRVLSW;;l
t;ab+holen;;pick up;P;PT;;
t;auf+räumen;;tidy up;P;L;;
t;mit+bringen;;bring along;P;PATFD;;
t;auf+essen;isst,isst;eat up;PA;F;;
t;an+ziehen;;put on;P;C;;
d;helfen;hilfst,hilft;help;PA;PA;;lc
d;folgen;;follow;PA;PA;;g
d;danken;;thank;P;P;;
d;antworten;antwortest,antwortet;answer;P;P;;
d;zu+hören;;listen to;PA;P;;
di;geben;gibst,gibt;give;P;TFDR;PA;
di;zeigen;;show;P;TRVA;P;
di;bringen;;bring;P;TFDR;PA;
di;schicken;;send;P;RT;P;
di;leihen;;lend;P;TVR;P;
di;erzählen;;tell;P;Y;P;
s;sagen;;say;P;;;
s;denken;;think;P;;;
s;glauben;;believe;P;;;
s;wissen;weiß,weißt,weiß,wissen,wisst,wissen;know;P;;;
s;hoffen;;hope;P;;;
q;fragen;;ask;P;;;
c;sein;bin,bist,ist,sind,seid,sind;be;PATFDRVLSW;;;
"""

# German;English;classes it fits;order rank (opinion 0, size 1, age 2, colour 3);[inflection stem]
ADJECTIVES = """
groß;big;PATFDRVLSW;1
klein;small;PATFDRVLSW;1
alt;old;PATRVLSW;2
jung;young;PA;2
neu;new;TRVLSW;2
rot;red;TVS;3
blau;blue;TVS;3
grün;green;TVSF;3
gelb;yellow;TVSF;3
schwarz;black;TVSA;3
weiß;white;TVSA;3
braun;brown;TSA;3
grau;grey;TVSA;3
schön;beautiful;PATVLSW;0
gut;good;PATFDRVL;0
interessant;interesting;PRL;0
lecker;delicious;FD;0
freundlich;friendly;PA;0
nett;nice;P;0
lustig;funny;PAR;0
müde;tired;PA;0
hungrig;hungry;PA;0
glücklich;happy;PA;0
traurig;sad;PAR;0
klug;clever;PA;0
schnell;fast;AV;0
langsam;slow;AV;0
teuer;expensive;TVRFDS;0;teur
billig;cheap;TVRFDS;0
warm;warm;FDL;0
kalt;cold;FDL;0
frisch;fresh;FD;0
süß;sweet;FDA;0
sauber;clean;TVLSW;0
schmutzig;dirty;TVLSWA;0
ruhig;quiet;PAL;0
laut;loud;PAL;0
dunkel;dark;LSW;0;dunkl
leer;empty;TL;0
stark;strong;PAD;0
krank;ill;PA;0
berühmt;famous;PARL;0
"""

# German;English (manner adverbs, after the object in both languages)
MANNER = "schnell;quickly|langsam;slowly|leise;quietly|laut;loudly|gut;well"
# German;English time phrases (fronted or after the object)
TIMES = (
    "heute;today|jetzt;now|manchmal;sometimes|oft;often|am Morgen;in the morning|"
    "am Abend;in the evening|in der Nacht;at night|am Wochenende;at the weekend|"
    "jeden Tag;every day|im Sommer;in summer|im Winter;in winter|am Montag;on Monday|"
    "am Dienstag;on Tuesday|am Mittwoch;on Wednesday|am Donnerstag;on Thursday|"
    "am Freitag;on Friday|am Samstag;on Saturday|am Sonntag;on Sunday"
)
NUMBERS = (
    "zwei;two|drei;three|vier;four|fünf;five|sechs;six|sieben;seven|acht;eight|neun;nine|"
    "zehn;ten|elf;eleven|zwölf;twelve|zwanzig;twenty|hundert;a hundred"
)


@dataclass(frozen=True, slots=True)
class Noun:
    gender: int  # 0 masculine, 1 feminine, 2 neuter
    de: tuple[str, ...]  # see noun_forms
    en_sg: str
    en_pl: str
    classes: str


@dataclass(frozen=True, slots=True)
class Verb:
    frame: str
    prefix: str  # separable prefix ("an" in anrufen), "" otherwise
    forms: tuple[str, ...]  # ich du er/sie/es wir ihr sie, without the prefix
    inf: str  # full infinitive, prefix included
    en: str
    en3: str  # English 3rd person singular
    subj: str
    obj: str
    iobj: str
    flags: str


@dataclass(frozen=True, slots=True)
class Adjective:
    de: str
    stem: str
    en: str
    classes: str
    rank: int


def noun_forms(sg: str, pl: str, gender: int, oblique: str) -> tuple[str, ...]:
    """(nominative sg, accusative sg, dative sg, genitive sg, plural, dative plural)."""
    weak = oblique.startswith("~")
    obl = sg + oblique[1:] if weak else sg
    gen = obl if weak else sg + (oblique or "s") if gender != 1 else sg
    dat_pl = pl if pl.endswith(("n", "s")) else pl + "n"
    return (sg, obl, obl, gen, pl, dat_pl)


def conjugate(inf: str, forms: str) -> tuple[str, ...]:
    """Present tense (ich, du, er, wir, ihr, sie) of a German verb without its prefix."""
    parts = forms.split(",") if forms else []
    if len(parts) == 6:
        return tuple(parts)
    if inf.endswith(("eln", "ern")):
        stem = inf[:-1]
        ich = stem[:-2] + "le" if inf.endswith("eln") else stem + "e"
    else:
        stem = inf[:-2]
        ich = stem + "e"
    e = "e" if stem.endswith(("t", "d")) else ""
    du = stem + ("t" if stem.endswith(("s", "ß", "z", "x")) else e + "st")
    er = stem + e + "t"
    if parts:
        du, er = parts
        e = "e" if du == stem + "est" else e  # öffnen: du öffnest, ihr öffnet
    return (ich, du, er, inf, stem + e + "t", inf)


def english_3sg(base: str) -> str:
    """'see' -> 'sees', 'go shopping' -> 'goes shopping', 'tidy up' -> 'tidies up'."""
    head, _, rest = base.partition(" ")
    if head == "have":
        head = "has"
    elif head.endswith(("s", "sh", "ch", "x", "z", "o")):
        head += "es"
    elif head.endswith("y") and head[-2] not in "aeiou":
        head = head[:-1] + "ies"
    else:
        head += "s"
    return f"{head} {rest}".strip()


def _rows(text: str) -> list[list[str]]:
    return [line.split(";") for line in text.strip().splitlines()]


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(item.split(";")) for item in text.split("|"))  # type: ignore[misc]


def load_nouns() -> tuple[Noun, ...]:
    out = []
    for g, sg, pl, en_sg, en_pl, cls, *obl in _rows(NOUNS):
        gender = "mfn".index(g)
        out.append(
            Noun(gender, noun_forms(sg, pl, gender, obl[0] if obl else ""), en_sg, en_pl, cls)
        )
    return tuple(out)


def load_verbs() -> tuple[Verb, ...]:
    out = []
    for frame, inf, forms, en, subj, obj, iobj, flags in _rows(VERBS):
        prefix, _, base = inf.rpartition("+")
        present = conjugate(base, forms)
        en3 = english_3sg(en)
        out.append(Verb(frame, prefix, present, prefix + base, en, en3, subj, obj, iobj, flags))
    return tuple(out)


def load_adjectives() -> tuple[Adjective, ...]:
    out = []
    for de, en, cls, rank, *stem in _rows(ADJECTIVES):
        base = stem[0] if stem else de[:-1] if de.endswith("e") else de  # müde -> müd-e
        out.append(Adjective(de, base, en, cls, int(rank)))
    return tuple(out)


MANNER_PAIRS = _pairs(MANNER)
TIME_PAIRS = _pairs(TIMES)
NUMBER_PAIRS = _pairs(NUMBERS)
