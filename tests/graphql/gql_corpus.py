"""The corpus: operations over the demo schema that real clients send.

Fragments, aliases, variables, @include/@skip, __typename, nesting three
levels deep and more, lists of entities, and errors (malformed and unknown ids).
Each entry: (name, query, variables).
"""

from __future__ import annotations

from typing import Any

T1, T2, T3, T7, T12, T25 = "tt0000001", "tt0000002", "tt0000003", "tt0000007", "tt0000012", "tt0000025"
P1, P2, P5 = "nm0000001", "nm0000002", "nm0000005"

TITLE_FIELDS = "fragment TitleCore on Title { id primaryTitle originalTitle kind startYear endYear runtimeMinutes genres }"
PERSON_FIELDS = "fragment PersonCore on Person { id name birthYear deathYear professions }"

Op = tuple[str, str, dict[str, Any]]

CORPUS: list[Op] = [
    ("title-scalars", f'{{ title(id: "{T1}") {{ id primaryTitle originalTitle kind startYear endYear runtimeMinutes genres }} }}', {}),
    ("title-rating", f'{{ title(id: "{T2}") {{ primaryTitle rating {{ averageRating numVotes }} }} }}', {}),
    ("title-rating-only", f'{{ title(id: "{T3}") {{ rating {{ numVotes }} }} }}', {}),
    ("title-cast", f'{{ title(id: "{T2}") {{ cast {{ category characters ordering person {{ id name }} }} }} }}', {}),
    ("title-images", f'{{ title(id: "{T7}") {{ images {{ id url width height caption }} }} }}', {}),
    ("title-everything", f'{{ title(id: "{T12}") {{ ...TitleCore rating {{ averageRating numVotes }} cast {{ category person {{ ...PersonCore }} }} images {{ id }} }} }} {TITLE_FIELDS} {PERSON_FIELDS}', {}),
    ("var-title", "query T($id: ID!) { title(id: $id) { id primaryTitle rating { averageRating } } }", {"id": T3}),
    ("var-person", "query P($id: ID!) { person(id: $id) { name knownFor { primaryTitle } } }", {"id": P1}),
    ("named-op-multi", "query A { title(id: \"tt0000001\") { id } } query B { person(id: \"nm0000001\") { id } }", {"__operationName": "B"}),
    ("aliases", f'{{ a: title(id: "{T1}") {{ name: primaryTitle r: rating {{ avg: averageRating }} }} b: title(id: "{T2}") {{ name: primaryTitle r: rating {{ avg: averageRating }} }} }}', {}),
    ("alias-same-field-twice", f'{{ title(id: "{T2}") {{ c1: cast {{ ordering }} c2: cast {{ person {{ name }} }} }} }}', {}),
    ("typename-root", "{ __typename }", {}),
    ("typename-nested", f'{{ __typename title(id: "{T1}") {{ __typename rating {{ __typename numVotes }} cast {{ __typename person {{ __typename id }} }} }} }}', {}),
    ("include-true", "query($w: Boolean!) { title(id: \"tt0000002\") { id rating @include(if: $w) { numVotes } } }", {"w": True}),
    ("include-false", "query($w: Boolean!) { title(id: \"tt0000002\") { id rating @include(if: $w) { numVotes } } }", {"w": False}),
    ("skip-true", "query($s: Boolean!) { title(id: \"tt0000002\") { id cast @skip(if: $s) { ordering } images @skip(if: $s) { id } } }", {"s": True}),
    ("skip-false", "query($s: Boolean!) { title(id: \"tt0000002\") { id cast @skip(if: $s) { ordering } images @skip(if: $s) { id } } }", {"s": False}),
    ("skip-fragment", "query($s: Boolean!) { title(id: \"tt0000003\") { id ... on Title @skip(if: $s) { rating { numVotes } } } }", {"s": True}),
    ("inline-fragment", f'{{ title(id: "{T3}") {{ ... on Title {{ primaryTitle rating {{ averageRating }} }} }} }}', {}),
    ("inline-no-condition", f'{{ title(id: "{T3}") {{ ... {{ id genres }} }} }}', {}),
    ("named-fragments-nested", f'query {{ title(id: "{T2}") {{ ...TitleCore ...More }} }} fragment More on Title {{ cast {{ person {{ ...PersonCore }} }} }} {TITLE_FIELDS} {PERSON_FIELDS}', {}),
    ("depth3-cast-person-knownfor", f'{{ title(id: "{T2}") {{ cast {{ person {{ name knownFor {{ id primaryTitle }} }} }} }} }}', {}),
    ("depth4-knownfor-rating", f'{{ title(id: "{T2}") {{ cast {{ person {{ knownFor {{ primaryTitle rating {{ averageRating numVotes }} }} }} }} }} }}', {}),
    ("depth5-knownfor-cast", f'{{ title(id: "{T1}") {{ cast {{ person {{ knownFor {{ cast {{ person {{ name }} }} images {{ id }} }} }} }} }} }}', {}),
    ("person-knownfor", f'{{ person(id: "{P2}") {{ ...PersonCore knownFor {{ ...TitleCore rating {{ numVotes }} }} }} }} {TITLE_FIELDS} {PERSON_FIELDS}', {}),
    ("person-knownfor-images", f'{{ person(id: "{P5}") {{ knownFor {{ images {{ id width }} cast {{ category }} }} }} }}', {}),
    ("search-titles", '{ search(q: "the") { titles { id primaryTitle } } }', {}),
    ("search-limit", '{ search(q: "a", limit: 3) { titles { id rating { numVotes } } people { id name } } }', {}),
    ("search-var", "query($q: String!, $n: Int) { search(q: $q, limit: $n) { titles { primaryTitle cast { ordering } } } }", {"q": "the", "n": 5}),
    ("search-people-knownfor", '{ search(q: "an", limit: 4) { people { name knownFor { primaryTitle rating { averageRating } } } } }', {}),
    ("search-everything", f'{{ search(q: "o", limit: 5) {{ titles {{ ...TitleCore images {{ id }} rating {{ numVotes }} }} people {{ ...PersonCore }} }} }} {TITLE_FIELDS} {PERSON_FIELDS}', {}),
    ("search-empty", '{ search(q: "zzzzqqq") { titles { id } people { id } } }', {}),
    ("two-roots", f'{{ title(id: "{T1}") {{ id rating {{ numVotes }} }} person(id: "{P1}") {{ name }} }}', {}),
    ("three-roots-aliased", f'{{ x: title(id: "{T1}") {{ id }} y: title(id: "{T25}") {{ id images {{ id }} }} z: person(id: "{P5}") {{ id }} }}', {}),
    ("many-titles-ratings", "{ " + " ".join(f't{i}: title(id: "tt{i:07d}") {{ id rating {{ averageRating numVotes }} }}' for i in range(1, 16)) + " }", {}),
    ("many-titles-everything", "{ " + " ".join(f't{i}: title(id: "tt{i:07d}") {{ id cast {{ person {{ name }} }} images {{ id }} rating {{ numVotes }} }}' for i in range(20, 30)) + " }", {}),
    ("unknown-title", '{ title(id: "tt9999999") { id rating { numVotes } } }', {}),
    ("malformed-title", '{ title(id: "bad") { id } }', {}),
    ("malformed-and-good", f'{{ bad: title(id: "nope") {{ id }} good: title(id: "{T1}") {{ id rating {{ numVotes }} }} }}', {}),
    ("unknown-person", '{ person(id: "nm9999999") { name knownFor { id } } }', {}),
    ("malformed-person-var", "query($id: ID!) { person(id: $id) { name } }", {"id": "xx"}),
    ("bad-search-limit", '{ search(q: "a", limit: 100000) { titles { id } } }', {}),
    ("var-default", "query($id: ID = \"tt0000004\") { title(id: $id) { id rating { numVotes } } }", {}),
    ("var-list-of-ids-reuse", "query($a: ID!, $b: ID!) { a: title(id: $a) { id } b: title(id: $b) { id cast { ordering } } }", {"a": T1, "b": T2}),
    ("fragment-on-person-in-cast", f'{{ title(id: "{T7}") {{ cast {{ person {{ ... on Person {{ name ...PersonCore }} }} }} }} }} {PERSON_FIELDS}', {}),
    ("fragment-spread-twice", f'{{ a: title(id: "{T1}") {{ ...TitleCore }} b: title(id: "{T2}") {{ ...TitleCore }} }} {TITLE_FIELDS}', {}),
    ("rating-in-fragment-only", f'{{ title(id: "{T12}") {{ id ...R }} }} fragment R on Title {{ rating {{ averageRating numVotes }} }}', {}),
    ("cast-in-fragment-with-typename", f'{{ title(id: "{T12}") {{ ...C }} }} fragment C on Title {{ __typename cast {{ __typename category person {{ __typename name }} }} }}', {}),
    ("images-only-many", "{ " + " ".join(f'i{i}: title(id: "tt{i:07d}") {{ images {{ id url }} }}' for i in range(30, 38)) + " }", {}),
    ("knownfor-of-cast-of-knownfor", f'{{ person(id: "{P1}") {{ knownFor {{ cast {{ person {{ knownFor {{ primaryTitle }} }} }} }} }} }}', {}),
    # (__schema { types } differs on purpose: the monolith shows its federation plumbing, the gateway does not)
    ("introspection-schema-roots", '{ __schema { queryType { name } mutationType { name } } }', {}),
    ("introspection-type", '{ __type(name: "Title") { name fields { name type { name kind ofType { name } } } } }', {}),
    ("title-and-introspection", f'{{ title(id: "{T1}") {{ id }} __type(name: "Rating") {{ fields {{ name }} }} }}', {}),
    ("deep-alias-everything", f'{{ t: title(id: "{T3}") {{ c: cast {{ p: person {{ k: knownFor {{ r: rating {{ a: averageRating }} images {{ u: url }} }} }} }} }} }}', {}),
]

assert len(CORPUS) >= 50, len(CORPUS)


def normalise(body: Any) -> Any:
    """Order-insensitive where the monolith promises no order (``images``)."""
    if isinstance(body, dict):
        out = {k: normalise(v) for k, v in body.items()}
        for k, v in out.items():
            if k.endswith("images") and isinstance(v, list):  # also aliases such as x_images
                out[k] = sorted(v, key=repr)
        return out
    if isinstance(body, list):
        return [normalise(x) for x in body]
    return body
