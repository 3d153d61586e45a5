"""Word lists the seed generator draws names from (made up, no real people)."""

from __future__ import annotations

GENRES = [
    "Action", "Adventure", "Animation", "Biography", "Comedy", "Crime", "Documentary", "Drama",
    "Family", "Fantasy", "History", "Horror", "Music", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Sport", "Thriller", "War", "Western",
]

ADJECTIVES = [
    "Silent", "Last", "Broken", "Golden", "Hidden", "Crimson", "Distant", "Eternal", "Forgotten",
    "Wild", "Frozen", "Burning", "Secret", "Lonely", "Electric", "Midnight", "Velvet", "Iron",
    "Shattered", "Restless", "Quiet", "Savage", "Hollow", "Bright", "Dark", "Lost", "Endless",
    "Little", "Great", "Strange", "Final", "Second", "Northern", "Paper", "Glass", "Silver",
]

NOUNS = [
    "River", "Kingdom", "Summer", "Stranger", "Garden", "Storm", "Mirror", "Harbor", "Empire",
    "Echo", "Witness", "Promise", "Shadow", "Road", "Island", "Letter", "Machine", "Orchard",
    "Frontier", "Lighthouse", "Voyage", "Crown", "Winter", "Circus", "Detective", "Diary",
    "Station", "Horizon", "Heart", "Secret", "Bridge", "Dream", "Hunter", "Ghost", "Signal",
    "Colony", "Queen", "Tide", "Window", "Engine", "Reckoning", "Night", "Season", "Forest",
]

PLACES = [
    "Avalon", "Marrakesh", "the North", "Brooklyn", "Lisbon", "the Valley", "Tangier", "Verona",
    "the Moon", "Kyoto", "Nowhere", "the Sea", "Casablanca", "the Hills", "Prague", "Babylon",
    "the Desert", "Patagonia", "Reykjavik", "the Old Town", "Havana", "Kilimanjaro",
]

FOREIGN_WORDS = [
    "La", "Le", "Der", "Die", "El", "Il", "Notte", "Sombra", "Schatten", "Lune", "Fleuve",
    "Stern", "Camino", "Cielo", "Herz", "Sang", "Vento", "Nuit", "Tiempo", "Traum", "Amore",
]

MALE_FIRST = [
    "James", "Robert", "Michael", "David", "Carlos", "Hiroshi", "Ahmed", "Luca", "Pierre", "Ivan",
    "Samuel", "Thomas", "Rafael", "Kenji", "Omar", "Anders", "Felix", "Mateo", "Henry", "Arjun",
    "Oliver", "Jonas", "Diego", "Victor", "Paul", "Emil", "Noah", "Lars", "Marco", "Andre",
]

FEMALE_FIRST = [
    "Mary", "Anna", "Sofia", "Yuki", "Amara", "Elena", "Claire", "Ingrid", "Priya", "Lucia",
    "Grace", "Hannah", "Isabel", "Mei", "Fatima", "Olga", "Camille", "Nora", "Greta", "Leila",
    "Alice", "Rosa", "Chloe", "Maya", "Vera", "Ines", "Zoe", "Freya", "Ada", "Julia",
]

LAST_NAMES = [
    "Hartley", "Moreno", "Tanaka", "Okafor", "Lindqvist", "Rossi", "Dubois", "Kowalski", "Novak",
    "Fischer", "Castillo", "Nakamura", "Haddad", "Petrov", "Silva", "Brennan", "Achterberg",
    "Whitfield", "Ferreira", "Kaur", "Jansen", "Morales", "Caldwell", "Sato", "Byrne", "Varga",
    "Holm", "Ortega", "Lambert", "Mendes", "Quinn", "Sorensen", "Albright", "Yilmaz", "Okoro",
    "Delacroix", "Marchetti", "Lindgren", "Abernathy", "Voss", "Kimura", "Reyes", "Thornton",
]

CHARACTER_NAMES = [
    "Jack", "Eleanor", "Sam", "The Stranger", "Detective Hale", "Maggie", "Dr. Ruiz", "Tom",
    "Captain Reed", "Lena", "The Narrator", "Mother", "Father", "Young Anna", "Marcus", "Iris",
    "Agent Cole", "Professor Lark", "Rosie", "Himself", "Herself", "The Driver", "Nadia", "Eli",
]
