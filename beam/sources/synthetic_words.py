"""Real English words for the synthetic catalog's latent topics, so a language model can read them."""

TOPICS = {
    "Cooking": ["recipe", "kitchen", "baking", "bread", "pasta", "spice", "flavor", "chef", "soup",
                "dessert", "grill", "vegetable", "sauce", "pastry", "dinner", "garlic", "oven",
                "noodle", "salad", "chocolate"],
    "Space": ["galaxy", "rocket", "orbit", "planet", "astronaut", "telescope", "comet", "nebula",
              "moon", "satellite", "cosmos", "star", "mars", "launch", "asteroid", "gravity",
              "eclipse", "spacecraft", "universe", "solar"],
    "Gardening": ["garden", "seed", "flower", "soil", "compost", "tomato", "rose", "orchard",
                  "harvest", "greenhouse", "pruning", "herb", "bulb", "tulip", "lawn", "shrub",
                  "mulch", "bloom", "vine", "sprout"],
    "Fitness": ["workout", "running", "muscle", "strength", "yoga", "cardio", "marathon", "stretch",
                "endurance", "training", "sprint", "squat", "cycling", "athlete", "gym", "coach",
                "stamina", "pilates", "rowing", "jogging"],
    "History": ["empire", "ancient", "war", "king", "revolution", "medieval", "castle", "dynasty",
                "pharaoh", "battle", "treaty", "colony", "roman", "archive", "monarch", "siege",
                "chronicle", "knight", "civilization", "relic"],
    "Music": ["guitar", "piano", "melody", "concert", "jazz", "orchestra", "song", "rhythm", "album",
              "violin", "drum", "symphony", "lyrics", "band", "chord", "opera", "harmony", "blues",
              "singer", "tempo"],
    "Finance": ["money", "investing", "stock", "budget", "savings", "market", "bond", "retirement",
                "portfolio", "dividend", "tax", "banking", "credit", "loan", "wealth", "pension",
                "inflation", "fund", "mortgage", "trading"],
    "Travel": ["journey", "island", "beach", "passport", "adventure", "mountain", "hotel", "voyage",
               "map", "tourist", "cruise", "backpack", "airport", "village", "coast", "trail",
               "resort", "luggage", "desert", "canyon"],
    "Technology": ["computer", "software", "robot", "internet", "code", "algorithm", "data",
                   "network", "laptop", "processor", "cloud", "app", "chip", "programming",
                   "server", "encryption", "gadget", "smartphone", "database", "circuit"],
    "Pets": ["dog", "cat", "puppy", "kitten", "leash", "aquarium", "parrot", "veterinarian",
             "grooming", "hamster", "collar", "breed", "paw", "fur", "rabbit", "feeder", "kennel",
             "tortoise", "obedience", "whisker"],
    "Mystery": ["detective", "murder", "clue", "suspect", "crime", "secret", "alibi", "witness",
                "thief", "inspector", "riddle", "poison", "conspiracy", "shadow", "evidence",
                "disappearance", "investigation", "motive", "heist", "fingerprint"],
    "Romance": ["love", "wedding", "heart", "kiss", "romance", "bride", "passion", "courtship",
                "valentine", "darling", "proposal", "sweetheart", "affair", "longing", "honeymoon",
                "embrace", "flirt", "devotion", "letter", "dance"],
    "Ocean": ["whale", "coral", "reef", "shark", "tide", "sailor", "dolphin", "diving", "wave",
              "lighthouse", "submarine", "shell", "current", "seabed", "octopus", "harbor",
              "fishing", "kelp", "lagoon", "anchor"],
    "Art": ["painting", "canvas", "sculpture", "gallery", "portrait", "brush", "museum", "sketch",
            "watercolor", "artist", "mural", "pottery", "color", "exhibition", "drawing", "clay",
            "masterpiece", "easel", "mosaic", "ink"],
    "Cars": ["engine", "racing", "motor", "wheel", "garage", "truck", "driver", "highway", "tire",
             "speed", "mechanic", "convertible", "fuel", "sedan", "rally", "turbo", "brake",
             "chassis", "roadtrip", "horsepower"],
    "Science": ["experiment", "laboratory", "molecule", "physics", "chemistry", "biology", "atom",
                "microscope", "theory", "energy", "cell", "genetics", "evolution", "quantum",
                "research", "element", "fossil", "climate", "neuron", "discovery"],
}

ADJECTIVES = ["Complete", "Little", "Modern", "Essential", "Secret", "Wild", "Golden", "Quiet",
              "Bold", "Hidden", "Practical", "Curious", "Great", "Simple", "Lost", "Bright",
              "Ultimate", "Gentle", "Everyday", "Brilliant"]

FORMATS = ["Guide", "Handbook", "Stories", "Journal", "Almanac", "Companion", "Notes", "Letters",
           "Chronicles", "Workshop", "Digest", "Collection"]

TEMPLATES = [
    "A {adj} look at {w1} and {w2}, with chapters on {w3} for every reader who loves {topic}.",
    "Everything about {w1}: {w2}, {w3} and the art of {w4}.",
    "From {w1} to {w2}, this {fmt} explores the world of {topic} through {w3}.",
    "Practical tips on {w1}, {w2} and {w3}, written for fans of {topic}.",
    "An illustrated {fmt} of {w1}, {w2} and {w4}; a favourite among {topic} enthusiasts.",
]

COUNTRIES = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "CA"]
AGE_BUCKETS = ["18-24", "25-34", "35-44", "45-54", "55+"]
